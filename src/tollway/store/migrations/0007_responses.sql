-- Stored Responses API responses (store/base.py, ResponseStore), addressed by owner:
-- the Response object and the input items it answered, both opaque JSON.
CREATE TABLE responses (
    owner text NOT NULL,
    id text NOT NULL,
    created_at double precision NOT NULL,
    response bytea NOT NULL,
    input_items bytea NOT NULL,
    PRIMARY KEY (owner, id)
);
-- For retention by age.
CREATE INDEX responses_created ON responses (created_at);
