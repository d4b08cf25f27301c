-- The dashboard (/admin/dashboard/*). A key's rows by time (a virtual key reads only its
-- own lineage's; the tail filters by key), the tail's rows of one model and its errors,
-- newest first: each by the expression the queries group and filter on
-- (postgres.GROUP_SQL's labels, rows.FAILED_OUTCOMES), so the planner matches it.
CREATE INDEX ledger_key_ts ON ledger ((coalesce(nullif(key_lineage, ''), '(no key)')), ts, id);
CREATE INDEX ledger_model_ts ON ledger
    ((coalesce(nullif(model, ''), nullif(model_asked, ''), '(none)')), ts, id);
CREATE INDEX ledger_failed_ts ON ledger (ts, id) WHERE outcome IN ('error', 'refused');

-- Spend alerts as they fired (policy/alerts.py; once per window fleet-wide, so once
-- here), newest first; `detail` is the alert as its webhook got it.
CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    at double precision NOT NULL,
    rule text NOT NULL,
    scope text NOT NULL,
    name text NOT NULL,
    message text NOT NULL,
    detail json NOT NULL
);
CREATE INDEX alerts_at ON alerts (at);
