-- each cargo inventory records what it changed, debounced (ingest/cargo.py)
ALTER TABLE cargo_scan ADD COLUMN added text[];
ALTER TABLE cargo_scan ADD COLUMN removed text[];
ALTER TABLE cargo_scan ADD COLUMN aboard text[];    -- the debounced inventory after this scan
