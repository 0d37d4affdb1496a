"""Data files shipped with the anime domain (a package so that wheels include them)."""
