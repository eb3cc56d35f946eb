-- Portable DDL: the same text runs on SQLite and PostgreSQL.
-- Every resource is one JSON document (body) plus the indexed columns lookups need.
CREATE TABLE IF NOT EXISTS resources (
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    project_id TEXT,
    loadbalancer_id TEXT,
    parent_id TEXT,
    ref_id TEXT,
    position BIGINT NOT NULL DEFAULT 0,
    provisioning_status TEXT,
    created_at TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS resources_kind_project ON resources (kind, project_id, created_at, id);
CREATE INDEX IF NOT EXISTS resources_kind_created ON resources (kind, created_at, id);
CREATE INDEX IF NOT EXISTS resources_lb ON resources (loadbalancer_id, provisioning_status);
CREATE INDEX IF NOT EXISTS resources_parent ON resources (parent_id);
CREATE INDEX IF NOT EXISTS resources_ref ON resources (ref_id);

-- The outbox: one row per change, written in the transaction that set PENDING_*.
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    loadbalancer_id TEXT NOT NULL,
    op TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    state TEXT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    payload TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_lb ON jobs (loadbalancer_id, state, created_at);
