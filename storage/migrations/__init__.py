"""Alembic migrations of the catalog schema (``vtsearch.storage.migrate`` runs them)."""
