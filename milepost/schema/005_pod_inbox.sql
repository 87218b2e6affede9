-- proofs of delivery posted to the API (POST /v1/pod) wait here for milepost ingest, which
-- applies them to the parcels' lifecycle and marks them processed in the transaction that
-- stores the resulting parcel events: the API and ingest share nothing but the database.
CREATE TABLE pod_inbox (
    pod_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    vehicle_id   text NOT NULL,
    payload      bytea NOT NULL,            -- the body, as the MQTT pod topic carries it
    processed_at timestamptz
);
CREATE INDEX pod_inbox_pending_idx ON pod_inbox (pod_id) WHERE processed_at IS NULL;
