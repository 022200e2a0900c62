-- Every batch rewrites the row of each player whose win carried a display name. Room on the page lets those
-- updates stay heap-only (no new primary-key entry): about a sixth off the upsert's cost here (docs/benchmarks.md).
ALTER TABLE players SET (fillfactor = 70);
