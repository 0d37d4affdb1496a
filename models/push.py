"""Expo push tokens and delivery (auth.md P1–P4, R27–R34): arriving with its own work."""
