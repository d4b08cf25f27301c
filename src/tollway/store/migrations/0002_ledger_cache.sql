-- The response cache's outcome per request (hit | semantic-hit | miss | bypass).
ALTER TABLE ledger ADD COLUMN cache text;
