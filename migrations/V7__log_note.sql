-- A short note on what the gateway changed in a request (e.g. Anthropic thinking blocks
-- dropped when a Messages request was translated for another provider kind).
ALTER TABLE request_logs ADD COLUMN note text;
