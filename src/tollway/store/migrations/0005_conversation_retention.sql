-- Retention (conversations.retention_days): idle conversations and old summaries,
-- found by time.
CREATE INDEX conversations_idle ON conversations (updated_at);
CREATE INDEX conversation_summaries_created ON conversation_summaries (created_at);
