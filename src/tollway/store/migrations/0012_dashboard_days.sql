-- The dashboard's daily totals (store/daily.py): per UTC day and key lineage, and for
-- every key together under the key '', the rows' requests, errors, cache hits and
-- lookups, dollars and tokens (dash_totals); dollars and requests per group of each
-- dimension (dash_groups); and how many rows' latency (metric 0) and time to first
-- token (metric 1) fell in each bin of a log scale 2 % wide (dash_bins). Kept by a
-- trigger on every insert into the ledger (only the rows inserted: a row a conflict
-- skipped is not counted), in the inserting transaction; the rows already written are
-- totalled here. Labels, errors and cache outcomes as postgres.GROUP_SQL and
-- accounting/rows.py define them; bins as daily.bin_sql.
CREATE TABLE dash_totals (
    key text NOT NULL, day integer NOT NULL, requests bigint NOT NULL,
    errors bigint NOT NULL, cache_hits bigint NOT NULL, cache_lookups bigint NOT NULL,
    saved_usd double precision NOT NULL, cost_usd double precision NOT NULL,
    input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,
    PRIMARY KEY (key, day));
CREATE TABLE dash_groups (
    key text NOT NULL, dim text NOT NULL, day integer NOT NULL, name text NOT NULL,
    cost_usd double precision NOT NULL, requests bigint NOT NULL,
    PRIMARY KEY (key, dim, day, name));
CREATE TABLE dash_bins (
    key text NOT NULL, metric smallint NOT NULL, day integer NOT NULL, bin integer NOT NULL,
    rows bigint NOT NULL, PRIMARY KEY (key, metric, day, bin));

-- The statement adding the rows of relation `src` (the trigger's transition table, or
-- the ledger itself once): each row under its key and under ''; upserts in key order,
-- so concurrent writers lock the same totals in the same order.
CREATE FUNCTION dash_add_sql(src text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
SELECT format($q$
WITH x AS MATERIALIZED (
    SELECT k.key, floor(r.ts / 86400)::int AS day, r.cost_usd, r.saved_usd,
           r.input_tokens, r.output_tokens, r.outcome IN ('error', 'refused') AS failed,
           r.cache IN ('hit', 'semantic-hit') AS hit,
           r.cache IN ('hit', 'semantic-hit', 'miss') AS lookup,
           coalesce(nullif(r.model, ''), nullif(r.model_asked, ''), '(none)') AS model,
           coalesce(nullif(r.key_lineage, ''), '(no key)') AS lineage,
           coalesce(nullif(r.team, ''), '(none)') AS team,
           coalesce(nullif(r.feature, ''), '(none)') AS feature,
           coalesce(nullif(r."user", ''), '(none)') AS "user",
           CASE WHEN r.latency_ms > 0 AND r.latency_ms < 'Infinity'
                THEN floor(ln(r.latency_ms) / ln(1.02::float8))::int ELSE -1000000 END AS lat,
           CASE WHEN r.ttft_ms IS NULL THEN NULL
                WHEN r.ttft_ms > 0 AND r.ttft_ms < 'Infinity'
                THEN floor(ln(r.ttft_ms) / ln(1.02::float8))::int ELSE -1000000 END AS ttft
    FROM %s r,
         LATERAL (VALUES (coalesce(nullif(r.key_lineage, ''), '(no key)')), ('')) k(key)),
totals AS (
    INSERT INTO dash_totals AS t
    SELECT key, day, count(*), count(*) FILTER (WHERE failed), count(*) FILTER (WHERE hit),
           count(*) FILTER (WHERE lookup), sum(saved_usd), sum(cost_usd),
           sum(input_tokens), sum(output_tokens)
    FROM x GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (key, day) DO UPDATE SET requests = t.requests + excluded.requests,
        errors = t.errors + excluded.errors, cache_hits = t.cache_hits + excluded.cache_hits,
        cache_lookups = t.cache_lookups + excluded.cache_lookups,
        saved_usd = t.saved_usd + excluded.saved_usd, cost_usd = t.cost_usd + excluded.cost_usd,
        input_tokens = t.input_tokens + excluded.input_tokens,
        output_tokens = t.output_tokens + excluded.output_tokens
    RETURNING 1),
groups AS (
    INSERT INTO dash_groups AS g
    SELECT key, dim, day, name, sum(cost_usd), count(*) FROM (
        SELECT key, 'model' AS dim, day, model AS name, cost_usd FROM x
        UNION ALL SELECT key, 'key', day, lineage, cost_usd FROM x
        UNION ALL SELECT key, 'team', day, team, cost_usd FROM x
        UNION ALL SELECT key, 'feature', day, feature, cost_usd FROM x
        UNION ALL SELECT key, 'user', day, "user", cost_usd FROM x) named
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (key, dim, day, name) DO UPDATE SET cost_usd = g.cost_usd + excluded.cost_usd,
        requests = g.requests + excluded.requests
    RETURNING 1)
INSERT INTO dash_bins AS b
SELECT key, metric, day, bin, count(*) FROM (
    SELECT key, 0::smallint AS metric, day, lat AS bin FROM x
    UNION ALL SELECT key, 1::smallint, day, ttft FROM x WHERE ttft IS NOT NULL) binned
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (key, metric, day, bin) DO UPDATE SET rows = b.rows + excluded.rows$q$, src)
$f$;

CREATE FUNCTION dash_add_rows() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE dash_add_sql('new_rows');
    RETURN NULL;
END $f$;

CREATE TRIGGER ledger_dash_days AFTER INSERT ON ledger
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION dash_add_rows();

DO $f$ BEGIN EXECUTE dash_add_sql('ledger'); END $f$;
