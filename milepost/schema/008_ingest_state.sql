-- what an ingest's parcel stage holds between events and cannot rebuild from parcel_latest
-- (attempts and cargo removals waiting to settle, which vans are out of their hub or have
-- a cargo reader); written in the transaction of each batch that changed it, read at
-- start-up, so a crash loses none of it
CREATE TABLE ingest_state (
    instance   text NOT NULL,         -- the ingest's MQTT client id
    name       text NOT NULL,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, name)
);
