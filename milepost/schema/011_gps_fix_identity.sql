-- a fix is what its van said: its identity is the vehicle, the time and the device's own
-- time (NULL where its clock needed no correction). A redelivered fix is stored once as
-- before; two fixes that a clock correction puts on one time (a van's first fixes, before
-- its clock was known, and later ones) are both kept instead of one being dropped.
DROP INDEX gps_fix_vehicle_time_idx;
CREATE UNIQUE INDEX gps_fix_vehicle_time_idx ON gps_fix (vehicle_id, time DESC, device_time)
    NULLS NOT DISTINCT;
