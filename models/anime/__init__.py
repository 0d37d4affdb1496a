"""The anime domain (anime.md): catalog, watch lists, collections, comments."""
