-- cold chain: the temperature range a parcel must stay in while aboard (manifest fields
-- temp_min_c / temp_max_c); a sensor reading outside it is Exception_COLD_CHAIN
ALTER TABLE parcel ADD COLUMN temp_min_c double precision;
ALTER TABLE parcel ADD COLUMN temp_max_c double precision;
-- how sure the binding of a parcel to its van is (geo/matching.py, geo/lifecycle.py)
ALTER TABLE parcel_latest ADD COLUMN confidence double precision;
