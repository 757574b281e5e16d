-- Outbox entries the relay gave up on stay visible with every failed attempt.
ALTER TABLE outbox ADD COLUMN failed_at BIGINT;
-- JSON array of {attempt, at, error}, oldest first.
ALTER TABLE outbox ADD COLUMN history TEXT NOT NULL DEFAULT '[]';
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_failed ON outbox (id) WHERE delivered_at IS NULL AND failed_at IS NOT NULL;
