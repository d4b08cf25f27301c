-- The request's OpenTelemetry trace id (32 hex digits) when tracing is on, so a row
-- leads to its spans in Jaeger, Tempo or Honeycomb. NULL: tracing was off.
ALTER TABLE ledger ADD COLUMN trace_id text;
