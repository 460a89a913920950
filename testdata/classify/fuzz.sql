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
SET SESSION timezone TO 'UTC'

-- expect-each unknown
SELECT 'a' FROM t WHERE x = (

-- PostgreSQL rejects these; the firewall does not guess what they mean.
-- expect-each unknown
EXPLAIN (ANALYZE off) DROP TABLE orders
SET SESSION timezone TM 'UTC'

-- Found by the differential fuzzer: PostgreSQL's tree leaves the file name
-- empty for TO '' as for TO STDOUT, so its reading alone cannot class these.
-- expect-each privileged
COPY orders TO ''
-- expect-each unknown
COPY orders TO $$$$
