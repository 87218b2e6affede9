-- positions posted to the API over HTTP (the OsmAnd protocol of the Traccar Client app,
-- GET|POST /osmand) wait here for milepost ingest, which runs them through the same stages
-- as every other fix (validation, geofences, bindings, lifecycle, ETAs), stores them in
-- gps_fix and marks them processed in the transaction of that batch. The API answers 200
-- once the row has committed, so an acknowledged report is never lost.
CREATE TABLE fix_inbox (
    inbox_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    vehicle_id   text NOT NULL,
    source       text NOT NULL,             -- the dead-letter source: 'http:/osmand'
    json         boolean NOT NULL,          -- payload is a JSON body, not query and form
    payload      bytea NOT NULL,            -- the request as the device sent it
    processed_at timestamptz
);
CREATE INDEX fix_inbox_pending_idx ON fix_inbox (inbox_id) WHERE processed_at IS NULL;
