-- a van whose clock is off (ingest/clocks.py): gps_fix.time is the corrected time, the one
-- every stage used, and device_time the time the device stamped; NULL when the device's
-- clock needed no correction (device_time = time)
ALTER TABLE gps_fix ADD COLUMN device_time timestamptz;
