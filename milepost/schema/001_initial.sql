-- milepost schema 1: every table named in DESIGN.md.
-- Time-series tables are hypertables (time column first). Chunk intervals are sized for
-- a fleet of ~1,000 vans at 1 Hz (3.6 M fixes an hour): a chunk of gps_fix or tag_read
-- plus its index stays well under a quarter of the memory of a 24 GB machine.
-- Only the indexes that the queries of ingest and api need are created.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- ---------------------------------------------------------------- plain tables

CREATE TABLE vehicle (
    vehicle_id   text PRIMARY KEY CHECK (vehicle_id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    epc          text UNIQUE,
    owntracks_id text UNIQUE,          -- "user/device"
    osmand_id    text UNIQUE,          -- Traccar Client / OsmAnd device id
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stop (
    stop_id   text PRIMARY KEY,
    kind      text NOT NULL CHECK (kind IN ('delivery', 'hub', 'dock')),
    name      text,
    geofence  jsonb NOT NULL,         -- GeoJSON Polygon or Point
    radius_m  double precision,       -- for a Point geofence
    hub_stop_id text                  -- for a dock: the hub it belongs to
);

CREATE TABLE gate (
    gate_id      text PRIMARY KEY,
    dock_stop_id text NOT NULL REFERENCES stop (stop_id),
    url          text NOT NULL,
    protocol     text NOT NULL CHECK (protocol IN ('mercury', 'chafon18', 'chafon288', 'ascii')),
    baud         integer NOT NULL DEFAULT 115200,
    antennas     jsonb NOT NULL DEFAULT '{}',
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE parcel (
    tracking_number text PRIMARY KEY CHECK (tracking_number ~ '^[A-Za-z0-9-]{6,40}$'),
    epc             text UNIQUE,
    stop_id         text REFERENCES stop (stop_id),
    promised_by     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE route (
    vehicle_id  text PRIMARY KEY REFERENCES vehicle (vehicle_id),
    hub_stop_id text NOT NULL REFERENCES stop (stop_id)
);

CREATE TABLE route_stop (
    vehicle_id text NOT NULL REFERENCES route (vehicle_id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    stop_id    text NOT NULL REFERENCES stop (stop_id),
    PRIMARY KEY (vehicle_id, seq)
);

-- newest fix per vehicle, upserted by ingest in the same transaction as the fixes
CREATE TABLE vehicle_latest (
    vehicle_id  text PRIMARY KEY,
    time        timestamptz NOT NULL,
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    speed_mps   double precision,
    heading_deg double precision,
    acc_m       double precision,
    motion      text,                 -- driving | stopped | at_stop | at_hub
    stop_id     text,                 -- current stop, when inside one
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE parcel_latest (
    tracking_number text PRIMARY KEY,
    time            timestamptz NOT NULL,
    status          text NOT NULL,
    sub_status      text,
    vehicle_id      text,
    stop_id         text,
    eta             timestamptz,
    eta_earliest    timestamptz,
    eta_latest      timestamptz,
    eta_confidence  double precision,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX parcel_latest_vehicle_idx ON parcel_latest (vehicle_id);

CREATE TABLE api_key (
    key_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix     text NOT NULL UNIQUE,  -- public part shown in listings and logs
    key_hash   bytea NOT NULL,        -- sha256 of the secret part
    role       text NOT NULL CHECK (role IN ('dispatcher', 'customer', 'device', 'admin')),
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE webhook (
    webhook_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id           bigint REFERENCES api_key (key_id),
    url              text NOT NULL,
    events           text[] NOT NULL,
    secret           text NOT NULL,
    tracking_numbers text[],          -- NULL: every parcel (dispatcher keys only)
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);

CREATE TABLE webhook_outbox (
    outbox_id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id      bigint NOT NULL REFERENCES webhook (webhook_id),
    event_id        uuid NOT NULL,
    type            text NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    delivered_at    timestamptz,
    last_status     integer,
    last_error      text,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;

-- ---------------------------------------------------------------- hypertables

CREATE TABLE gps_fix (
    time        timestamptz NOT NULL,
    vehicle_id  text NOT NULL,
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    speed_mps   double precision,
    heading_deg double precision,
    acc_m       double precision,
    alt_m       double precision,
    sats        smallint,
    hdop        double precision,
    seq         bigint,
    received_at timestamptz NOT NULL
);
SELECT create_hypertable('gps_fix', by_range('time', INTERVAL '6 hours'));
-- one fix per vehicle and instant: makes redelivery idempotent, and serves track queries
CREATE UNIQUE INDEX gps_fix_vehicle_time_idx ON gps_fix (vehicle_id, time DESC);

CREATE TABLE tag_read (
    time       timestamptz NOT NULL,
    gate_id    text NOT NULL,
    epc        text NOT NULL,
    antenna    smallint,
    rssi       double precision,
    read_count integer NOT NULL DEFAULT 1
);
SELECT create_hypertable('tag_read', by_range('time', INTERVAL '6 hours'));
CREATE INDEX tag_read_gate_time_idx ON tag_read (gate_id, time DESC);

CREATE TABLE gate_pass (
    time       timestamptz NOT NULL,   -- first read of the pass
    gate_id    text NOT NULL,
    epc        text NOT NULL,
    last_seen  timestamptz NOT NULL,
    direction  text NOT NULL CHECK (direction IN ('in', 'out', 'unknown')),
    reads      integer NOT NULL,
    peak_rssi  double precision,
    vehicle_id text                    -- the van bound at the dock, when known
);
SELECT create_hypertable('gate_pass', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX gate_pass_key_idx ON gate_pass (gate_id, epc, time);
CREATE INDEX gate_pass_epc_idx ON gate_pass (epc, time DESC);

CREATE TABLE cargo_scan (
    time       timestamptz NOT NULL,
    vehicle_id text NOT NULL,
    epcs       text[] NOT NULL
);
SELECT create_hypertable('cargo_scan', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX cargo_scan_vehicle_time_idx ON cargo_scan (vehicle_id, time DESC);

CREATE TABLE sensor_reading (
    time       timestamptz NOT NULL,
    vehicle_id text NOT NULL,
    temp_c     double precision,
    humidity   double precision
);
SELECT create_hypertable('sensor_reading', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX sensor_reading_vehicle_time_idx ON sensor_reading (vehicle_id, time DESC);

CREATE TABLE geofence_event (
    time       timestamptz NOT NULL,
    vehicle_id text NOT NULL,
    stop_id    text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('enter', 'exit', 'dwell')),
    dwell_s    double precision
);
SELECT create_hypertable('geofence_event', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX geofence_event_key_idx ON geofence_event (vehicle_id, time, stop_id, kind);

CREATE TABLE parcel_event (
    time            timestamptz NOT NULL,
    event_id        uuid NOT NULL,
    tracking_number text NOT NULL,
    status          text NOT NULL,
    sub_status      text,
    vehicle_id      text,
    stop_id         text,
    lon             double precision,
    lat             double precision,
    detail          jsonb
);
SELECT create_hypertable('parcel_event', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX parcel_event_id_idx ON parcel_event (event_id, time);
CREATE INDEX parcel_event_parcel_idx ON parcel_event (tracking_number, time DESC);

CREATE TABLE eta_snapshot (
    time            timestamptz NOT NULL,
    tracking_number text NOT NULL,
    eta             timestamptz,
    eta_earliest    timestamptz,
    eta_latest      timestamptz,
    confidence      double precision
);
SELECT create_hypertable('eta_snapshot', by_range('time', INTERVAL '1 day'));
CREATE INDEX eta_snapshot_parcel_idx ON eta_snapshot (tracking_number, time DESC);

CREATE TABLE dead_letter (
    time        timestamptz NOT NULL,   -- when milepost received it
    source      text NOT NULL,          -- MQTT topic, "gate:<id>" or "http:/osmand"
    payload     bytea NOT NULL,
    reason      text NOT NULL
);
SELECT create_hypertable('dead_letter', by_range('time', INTERVAL '7 days'));
