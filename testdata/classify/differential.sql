-- Issue 12's root causes, each with cases of our own. PostgreSQL's own
-- parser (libpg_query) reads every string beside sqlparser; where the two
-- readings differ the statement is unknown. Every case here was run on a
-- real PostgreSQL 15 to confirm what it does.

-- 1. Lexer differentials: PostgreSQL ends an operator where -- or /* begins,
-- and accepts any non-ASCII byte in a dollar-quote tag.
-- expect-each destructive
SELECT 1 </* */ 2; DELETE FROM orders
SELECT $a€$ x $a€$; DROP TABLE orders
-- expect-each unknown
SELECT 1 ||-- '
, 2; DELETE FROM orders --'
SELECT 1 <-- '
; TRUNCATE orders; SELECT '
SELECT $€$ ; DELETE FROM orders; $€$
SELECT 'a' </* ' */ 'b'
SELECT * FROM orders WHERE id = 1 ||/* ' */ pg_terminate_backend(1)::text

-- The same text PostgreSQL reads as one harmless statement is read so.
-- expect-each read
SELECT 1 < /* */ 2
SELECT 1 +/* x */ 2
SELECT $$ DELETE FROM orders $$
SELECT $tag$ ; DROP TABLE orders; $tag$

-- expect read
SELECT 1 || -- c
2

-- 2. EXPLAIN (ANALYSE …): British spelling, and the last option wins.
-- expect-each write
EXPLAIN (ANALYSE) DELETE FROM orders WHERE id = 1
EXPLAIN (ANALYZE false, ANALYSE true) UPDATE orders SET total = 0 WHERE id = 1
EXPLAIN ANALYSE INSERT INTO orders (id) VALUES (1)
EXPLAIN (ANALYZE 'tr') INSERT INTO orders (id) VALUES (1)
-- expect-each destructive
EXPLAIN (ANALYSE) DELETE FROM orders
EXPLAIN (COSTS off, ANALYSE on) DELETE FROM orders
-- expect-each read
EXPLAIN (ANALYSE true, ANALYZE false) DELETE FROM orders
EXPLAIN (ANALYSE off) UPDATE orders SET total = 0

-- 3. Identifier folding is ASCII only, and search_path is judged in order.
-- The Kelvin sign (U+212A) is not K to PostgreSQL: these call functions of
-- their own, not the reviewed built-ins their ASCII look-alikes name.
-- expect-each unknown
SELECT pg_bacKend_pid()
SELECT K FROM orders WHERE pg_catalog.lower(Kind) = 'x' AND pg_bacKend_pid() = 1
-- expect-each privileged
SET search_path = "Public"
SET search_path = 'Public'
SET search_path = public, pg_catalog
SET search_path TO billing, public
SELECT set_config('search_path', 'public, pg_catalog', false)
SET search_path = "$user", public, pg_catalog
-- expect-each read
SET search_path = "$user", public
SET search_path = pg_catalog, public
SET search_path = PUBLIC
SELECT lower(name) FROM customers

-- 4. User code reached without call syntax.
-- expect-each unknown
SELECT * FROM orders ORDER BY total USING ~<~~
SELECT * FROM orders ORDER BY total USING public.<
SELECT * FROM orders WHERE total === 5
SELECT 1 OPERATOR(public.+) 2
SELECT * FROM orders WHERE id = ANY (SELECT 1) AND total @@@@ 1
CALL archive_orders()
CALL public.purge(30)
-- expect-each read
SELECT * FROM orders ORDER BY total USING <
SELECT * FROM orders ORDER BY total USING OPERATOR(pg_catalog.>)
SELECT 1 OPERATOR(pg_catalog.+) 2

-- 5. WHEREs that look bounded and match every row.
-- expect-each destructive
DELETE FROM orders WHERE id = (SELECT id)
DELETE FROM orders WHERE id IN (SELECT id FROM orders)
DELETE FROM orders WHERE id = ANY (SELECT id FROM orders)
DELETE FROM orders WHERE id = SOME (SELECT id FROM public.orders)
UPDATE orders SET total = 0 WHERE id IN (SELECT orders.id FROM customers)
DELETE FROM orders WHERE (id = id) IS TRUE
DELETE FROM orders WHERE (id = id) = true
DELETE FROM orders WHERE (id <> id) IS NOT TRUE
DELETE FROM orders WHERE (id = id) IS NOT FALSE
DELETE FROM orders WHERE id IS DISTINCT FROM NULL
DELETE FROM orders WHERE NOT (id IS NOT DISTINCT FROM NULL)
DELETE FROM orders WHERE (id IS NULL) IS FALSE
DELETE FROM orders WHERE (id IS NULL) = false
DELETE FROM orders WHERE status LIKE '%'
UPDATE orders SET total = 0 WHERE status ILIKE '%%'
DELETE FROM orders USING orders o2 WHERE orders.id = o2.id
DELETE FROM orders o USING orders o2 WHERE o.id = o2.id
UPDATE orders SET total = 0 FROM orders o2 WHERE orders.id = o2.id
MERGE INTO orders t USING orders s ON t.id = s.id WHEN MATCHED THEN UPDATE SET total = 0
MERGE INTO orders t USING (SELECT * FROM orders) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET total = 0
INSERT INTO orders SELECT * FROM orders ON CONFLICT (id) DO UPDATE SET total = 0
INSERT INTO orders (id, total) SELECT id, 0 FROM public.orders ON CONFLICT (id) DO UPDATE SET total = excluded.total
-- expect-each write
DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE created_at < now() - interval '30 days' LIMIT 1000)
DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE status = 'void')
DELETE FROM orders WHERE customer_id IN (SELECT c.id FROM customers c WHERE c.banned)
DELETE FROM orders WHERE (id = 5) IS TRUE
DELETE FROM orders WHERE archived = true
DELETE FROM orders WHERE id IS NOT DISTINCT FROM 5
DELETE FROM orders WHERE status LIKE 'void%'
DELETE FROM orders USING orders o2 WHERE orders.id = o2.id AND o2.status = 'void'
DELETE FROM orders o USING customers c WHERE o.customer_id = c.id AND c.banned
INSERT INTO orders (id, total) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET total = excluded.total
INSERT INTO orders SELECT * FROM staging_orders ON CONFLICT (id) DO UPDATE SET total = excluded.total

-- 6. Data-destroying or privilege-widening DDL.
-- expect-each destructive
ALTER TABLE orders ALTER COLUMN total TYPE int USING total::int
ALTER TABLE orders ALTER COLUMN total TYPE numeric(5, 0)
ALTER TABLE orders ALTER COLUMN status TYPE varchar(3)
ALTER TABLE orders ALTER total TYPE smallint
ALTER TABLE orders SET UNLOGGED
-- expect-each ddl
ALTER TABLE orders ALTER COLUMN status TYPE text
ALTER TABLE orders ALTER COLUMN status TYPE varchar
GRANT SELECT ON orders TO app_read
-- expect-each privileged
GRANT SELECT ON orders TO PUBLIC
GRANT ALL ON ALL TABLES IN SCHEMA public TO app_read, PUBLIC
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO public
ALTER TABLE orders OWNER TO mallory
ALTER VIEW v OWNER TO mallory
ALTER FUNCTION f() OWNER TO mallory
ALTER SCHEMA billing OWNER TO mallory
CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'
ALTER FUNCTION f() SECURITY DEFINER
ALTER SEQUENCE orders_id_seq OWNER TO mallory

-- 7. TABLE x is a read of x wherever it stands: its table is recorded, so
-- table scopes see it (tests/policy.rs checks the scope).
-- expect-each read
TABLE orders
SELECT * FROM (TABLE orders) t
WITH x AS (TABLE orders) SELECT * FROM x
SELECT 1 UNION TABLE orders
DECLARE c CURSOR FOR TABLE orders

-- Everyday reads that were refused.
-- expect-each read
SELECT date(created_at), text(id), int8(id) FROM orders
SELECT currval('orders_id_seq'), lastval()
SELECT regr_slope(total, id), regr_count(total, id) FROM orders
SELECT xmlagg(xmlelement(name o, id)) FROM orders
SELECT generate_subscripts(ARRAY[1, 2], 1)
SELECT has_table_privilege('orders', 'select'), has_any_column_privilege('orders', 'select')
SELECT (information_schema._pg_expandarray(ARRAY[1, 2])).n
SELECT pg_catalog.pg_get_partkeydef(1), pg_catalog.pg_partition_ancestors(1)
DISCARD ALL
RESET ALL

-- Found by an adversarial review of this change, each run on PostgreSQL 15.
-- A plain EXPLAIN plans, and planning runs immutable and stable functions.
-- expect-each unknown
EXPLAIN SELECT 1 LIMIT (table_to_xml('billing.secret', true, true, '')::text)::int
EXPLAIN SELECT * FROM orders WHERE id = (database_to_xml(true, true, '')::text)::int
EXPLAIN SELECT my_immutable_function(5)
-- Keyword-named functions exist only as user functions.
SELECT "exists"(2)
SELECT "coalesce"(3)
SELECT "row"(1)
SELECT uuidv7()
-- "Everything but" is unbounded.
-- expect-each destructive
DELETE FROM orders WHERE id NOT IN (-1)
DELETE FROM orders WHERE NOT (id = -1)
DELETE FROM orders WHERE id <> 5
UPDATE orders SET total = 0 WHERE id IS DISTINCT FROM 5
DELETE FROM orders WHERE status ~ ''
DELETE FROM orders WHERE status ~* '.*'
ALTER SCHEMA public RENAME TO old_public
ALTER TABLE orders SET SCHEMA billing
ALTER VIEW v SET SCHEMA billing
-- expect-each write
DELETE FROM orders WHERE id = 5 AND status <> 'open'
DELETE FROM orders WHERE NOT (id <> 5)
DELETE FROM orders WHERE id NOT IN (SELECT o.id FROM orders o WHERE o.keep) AND created_at < '2020-01-01'
-- expect-each privileged
CREATE POLICY p ON orders USING (true)
ALTER POLICY p ON orders USING (true)
ALTER TABLE orders DISABLE TRIGGER ALL
-- expect-each destructive
ALTER TABLE orders ALTER COLUMN status TYPE public.text
-- Catalogs are pg_catalog's, whichever one is named.
-- expect-each read
SELECT most_common_vals FROM pg_stats_ext
-- SQL-standard syntax PostgreSQL's grammar turns into calls.
SELECT extract(epoch FROM now()), substring('abc' FROM 1 FOR 2), position('a' IN 'b')
SELECT overlay('abc' PLACING 'x' FROM 2), trim(both ' ' FROM ' a ')
SELECT now() AT TIME ZONE 'UTC', floor(random() * 10), CEIL(1.5)
SELECT 'a' LIKE 'a%' ESCAPE '\'
SELECT * FROM unnest(ARRAY[1, 2]) WITH ORDINALITY
SELECT txid_current_if_assigned()
-- pg_dump's session set-up: an empty path leaves only pg_catalog.
SELECT pg_catalog.set_config('search_path', '', false)
