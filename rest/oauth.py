"""oauth routes: arriving with their own work."""

routes: list = []
