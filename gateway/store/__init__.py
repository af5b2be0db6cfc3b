"""Adapters to PostgreSQL and Redis: connections, error translation, keys, migrations."""
