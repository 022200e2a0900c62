-- events_occurred_at was a B-tree that every insert paid for (about 8% of the write path's CPU: bench/growth.py
-- write, and docs/benchmarks.md) and that one operator check reads: `leaderboard archive` asks whether an open
-- period's time range still holds events. Events arrive in about occurred_at order, so a BRIN index answers
-- that from a few page ranges per partition, and costs next to nothing to keep. Building it reads each
-- partition once (a sequential scan, no sort).
DROP INDEX IF EXISTS events_occurred_at;
CREATE INDEX events_occurred_at ON events USING brin (occurred_at);
