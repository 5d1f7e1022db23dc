"""Weight files of other frameworks, read as NumPy (no code from the file is run)."""
