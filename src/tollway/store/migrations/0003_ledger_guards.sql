-- What the guards did to a request ("pii:redact:email+phone,schema:retry"; no text).
ALTER TABLE ledger ADD COLUMN guards text;
