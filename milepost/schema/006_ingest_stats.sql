-- each milepost ingest process's counters, upserted with its stats line, for the API's
-- GET /metrics (the two processes share nothing but the database)
CREATE TABLE ingest_stats (
    instance   text PRIMARY KEY,      -- the ingest's MQTT client id
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    stats      jsonb NOT NULL
);
