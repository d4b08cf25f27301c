-- Keys: the record is the msgspec-encoded KeyRecord; id, hash and created_at are
-- copied out of it as columns for lookups and ordering.
CREATE TABLE keys (
    id text PRIMARY KEY,
    hash text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    record jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The ledger: one column per LedgerRow field (tests check they stay in step). ts is
-- epoch seconds as a double, so a row reads back exactly as it was written.
CREATE TABLE ledger (
    id text PRIMARY KEY,
    request_id text NOT NULL,
    ts double precision NOT NULL,
    status integer NOT NULL,
    outcome text NOT NULL,
    key_id text,
    key_lineage text,
    "user" text,
    team text,
    feature text,
    conversation text,
    model_asked text,
    model text,
    provider text,
    tier text,
    downgraded_from text,
    stream boolean NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    cost_usd double precision NOT NULL,
    priced boolean NOT NULL,
    estimated boolean NOT NULL,
    saved_usd double precision NOT NULL,
    latency_ms double precision NOT NULL,
    ttft_ms double precision,
    error text,
    retries integer NOT NULL,
    fallback_from text
);

-- rows() reads a window in (ts, id) order straight off this index.
CREATE INDEX ledger_ts_id ON ledger (ts, id);
-- Rows arrive roughly in ts order, so a BRIN index (a few pages for millions of rows)
-- lets a wide spend() window skip whole block ranges at almost no cost to inserts.
CREATE INDEX ledger_ts_brin ON ledger USING brin (ts);
