"""A run on disk: the git store, the SQLite index, their record formats, the run directory, doctor."""
