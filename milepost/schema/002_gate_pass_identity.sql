-- gate passes carry the EPC's GS1 identity and how sure the direction is
ALTER TABLE gate_pass ADD COLUMN epc_urn text;           -- pure-identity URN, NULL if not GS1
ALTER TABLE gate_pass ADD COLUMN confidence double precision;
ALTER TABLE gate_pass ADD COLUMN sequence text;          -- antenna roles in order: H>D, D>H, H~D, H, D
