"""Accounts, sessions and tokens (auth.md): who someone is and how they prove it."""
