"""api_keys routes: arriving with their own work."""

routes: list = []
