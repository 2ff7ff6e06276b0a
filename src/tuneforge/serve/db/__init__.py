"""The server's state in a database: keys, usage, request log, feedback (SQLite or PostgreSQL) and rate limits."""
