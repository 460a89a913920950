-- Inputs the fuzzer (fuzz/fuzz_targets/classify.rs) turned up, reviewed.
-- `#` is PostgreSQL's XOR operator, not a comment as in MySQL: text after
-- it is SQL.

-- expect-each destructive
SELECT 1 # 2; DROP TABLE t
SELECT 1 #- 2; DROP TABLE t
SELECT '{}'::jsonb #> '{a}'; DROP TABLE t
SELECT +++++++++id FROM t; TRUNCATE t

-- expect-each read
SELECT 1 # 2
EXPLAIN (ANALYZE off) DROP TABLE orders
SET SESSION timezone TO 'UTC'
-- sqlparser accepts this and PostgreSQL rejects it; either way only the
-- time zone could change.
SET SESSION timezone TM 'UTC'

-- expect-each unknown
SELECT 'a' FROM t WHERE x = (
