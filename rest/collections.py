"""collections routes (anime.md): arriving with their own work."""

routes: list = []
