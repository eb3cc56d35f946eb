//! Durable store of klb's resources on SQLite (default) or PostgreSQL, with migrations.
