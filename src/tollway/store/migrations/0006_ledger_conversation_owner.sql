-- Whose conversation a row was charged to: conversation budgets are counted per owner
-- (the key's lineage and the end user), and a rebuild of the budget counters from the
-- ledger must name the same counter. Rows from before it have NULL (not rebuilt).
ALTER TABLE ledger ADD COLUMN conversation_owner text;
