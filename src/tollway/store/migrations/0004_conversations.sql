-- Server-side conversations (store/base.py, ConversationStore), addressed by owner: a
-- conversation's turns are one opaque JSON message each, in seq order from 0.
CREATE TABLE conversations (
    owner text NOT NULL,
    id text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    system bytea,
    turns integer NOT NULL,
    tokens bigint NOT NULL,
    cost_usd double precision NOT NULL,
    PRIMARY KEY (owner, id)
);
-- list() for one owner, newest first.
CREATE INDEX conversations_updated ON conversations (owner, updated_at);

CREATE TABLE conversation_turns (
    owner text NOT NULL,
    id text NOT NULL,
    seq integer NOT NULL,
    message bytea NOT NULL,
    PRIMARY KEY (owner, id, seq)
);

-- Summaries of history prefixes; those tied to a conversation go when it is deleted.
CREATE TABLE conversation_summaries (
    owner text NOT NULL,
    prefix text NOT NULL,
    conversation text,
    summary bytea NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (owner, prefix)
);
CREATE INDEX conversation_summaries_conversation
    ON conversation_summaries (owner, conversation) WHERE conversation IS NOT NULL;

-- History tokens sent with a request, and those that trimming or summarising kept back.
ALTER TABLE ledger ADD COLUMN history_tokens integer;
ALTER TABLE ledger ADD COLUMN history_saved_tokens integer;
