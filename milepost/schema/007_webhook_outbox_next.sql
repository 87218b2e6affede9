-- the sender takes the oldest due rows of each subscription in turn (ingest/webhooks.py):
-- one range scan a subscription, so a dead receiver's backlog costs the others nothing
CREATE INDEX webhook_outbox_next_idx ON webhook_outbox (webhook_id, next_attempt_at)
    WHERE delivered_at IS NULL;
