-- Which endpoint a row was for: chat (chat completions, messages) or embeddings, so
-- their spend can be told apart (/admin/spend?by=kind). Rows from before were chat.
ALTER TABLE ledger ADD COLUMN kind text NOT NULL DEFAULT 'chat';
