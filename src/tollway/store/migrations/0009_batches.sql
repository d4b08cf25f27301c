-- Files and batches (store/base.py, BatchStore), addressed by owner; a batch's lines are
-- units of work that replicas claim under a lease (claimed_by, lease_until).
CREATE TABLE files (
    id text PRIMARY KEY,
    owner text NOT NULL,
    purpose text NOT NULL,
    filename text NOT NULL,
    size bigint NOT NULL,
    created_at double precision NOT NULL,
    content bytea NOT NULL  -- out of line (TOAST): listings never read it
);
-- list_files() for one owner, newest first; retention by age.
CREATE INDEX files_owner ON files (owner, created_at, id);
CREATE INDEX files_created ON files (created_at);

CREATE TABLE batches (
    id text PRIMARY KEY,
    owner text NOT NULL,
    endpoint text NOT NULL,
    input_file_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('validating', 'in_progress', 'finalizing',
        'completed', 'failed', 'expired', 'cancelling', 'cancelled')),
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    total integer NOT NULL,
    completed integer NOT NULL,
    failed integer NOT NULL,
    cancelled integer NOT NULL,
    cost_pico bigint NOT NULL,
    hold_id text,
    meta bytea NOT NULL
);
-- list_batches() for one owner, newest first; claim() and active() by status, oldest
-- first; prune() by age.
CREATE INDEX batches_owner ON batches (owner, created_at, id);
CREATE INDEX batches_status ON batches (status, created_at, id);
CREATE INDEX batches_input ON batches (input_file_id);

-- No foreign key to batches: lines are written by COPY, thousands at a time, and go
-- with their batch in the same transaction.
CREATE TABLE batch_lines (
    batch_id text NOT NULL,
    idx integer NOT NULL,
    custom_id text NOT NULL,
    body bytea NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed',
        'cancelled')),
    result bytea,
    cost_pico bigint NOT NULL,
    attempts integer NOT NULL,
    claimed_by text,
    lease_until double precision,
    PRIMARY KEY (batch_id, idx)
);
-- claim(): only the lines still to run, so settled ones are never scanned.
CREATE INDEX batch_lines_open ON batch_lines (batch_id, idx)
    WHERE state IN ('pending', 'running');
