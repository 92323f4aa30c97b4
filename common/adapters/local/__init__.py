"""The embedded backend: SQLite and files, no cloud."""
