-- The batch whose line a row was (OpenAI batches, Anthropic message batches), so a
-- batch's spend can be read apart (/admin/spend?by=batch). NULL: an interactive request.
ALTER TABLE ledger ADD COLUMN batch_id text;
