-- Sessions, transactions, settings and catalog queries (psql's \d family,
-- drivers' start-up chatter).

-- expect-each read
BEGIN
BEGIN ISOLATION LEVEL SERIALIZABLE
BEGIN READ ONLY
START TRANSACTION ISOLATION LEVEL REPEATABLE READ
COMMIT
ROLLBACK
END
SAVEPOINT active_record_1
RELEASE SAVEPOINT active_record_1
ROLLBACK TO SAVEPOINT active_record_1
SET TRANSACTION ISOLATION LEVEL READ COMMITTED
SET client_min_messages TO 'warning'
SET standard_conforming_strings = on
SET SESSION timezone TO 'UTC'
SET intervalstyle = iso_8601
SET extra_float_digits = 3
SET application_name = 'PostgreSQL JDBC Driver'
SET statement_timeout = '30s'
SET LOCAL lock_timeout = '2s'
SET TIME ZONE 'UTC'
SET datestyle TO ISO, MDY
SET client_encoding TO 'UTF8'
SET NAMES 'UTF8'
SET client_encoding = '''utf-8'''
SET client_encoding TO "Utf_8"
SET client_encoding TO unicode
SET client_encoding TO DEFAULT
SELECT set_config('client_encoding', 'utf-8', false)
SET search_path TO public
SET search_path = "$user", public
SET work_mem = '64MB'
RESET statement_timeout
RESET search_path
SELECT set_config('TimeZone', 'UTC', false)
SELECT set_config('statement_timeout', '5s', true)
SHOW server_version
SHOW TRANSACTION ISOLATION LEVEL
SHOW search_path
SHOW ALL
SELECT current_setting('server_version_num')
LISTEN jobs
UNLISTEN *
DISCARD PLANS
DISCARD SEQUENCES
DEALLOCATE ALL
DEALLOCATE p1
PREPARE q1 AS SELECT * FROM orders WHERE id = $1
PREPARE q2 (int) AS SELECT $1 + 1
DECLARE c1 CURSOR FOR SELECT * FROM orders
FETCH 100 FROM c1
CLOSE c1
EXPLAIN SELECT * FROM orders WHERE id = 1
EXPLAIN (FORMAT JSON) SELECT * FROM orders
EXPLAIN DELETE FROM orders
EXPLAIN UPDATE orders SET total = 0
EXPLAIN (ANALYZE) SELECT count(*) FROM orders
EXPLAIN ANALYZE SELECT * FROM orders WHERE id = 1
EXPLAIN (ANALYZE false, COSTS off) DELETE FROM orders
COPY orders TO STDOUT
COPY (SELECT * FROM orders WHERE total > 100) TO STDOUT WITH (FORMAT csv)
SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_catalog.pg_attribute a WHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
SELECT n.nspname AS "Schema", c.relname AS "Name" FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' AND n.nspname <> 'information_schema' ORDER BY 1, 2
SELECT d.datname AS "Name", pg_catalog.pg_get_userbyid(d.datdba) AS "Owner" FROM pg_catalog.pg_database d ORDER BY 1
SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'
SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'orders'
SELECT relname, n_live_tup FROM pg_stat_user_tables ORDER BY n_live_tup DESC
SELECT pid, state, query FROM pg_stat_activity WHERE datname = current_database()
SELECT pg_size_pretty(pg_total_relation_size('orders'))
SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'orders'
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'orders'::regclass
SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull FROM pg_attribute a LEFT JOIN pg_attrdef d ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE a.attrelid = '"users"'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
SELECT pg_get_serial_sequence('users', 'id')
SELECT nspname FROM pg_namespace WHERE nspname = ANY(current_schemas(false))
SELECT COUNT(*) FROM pg_namespace WHERE nspname=$1
SELECT pg_is_in_recovery()
SELECT pg_backend_pid()
SELECT 1

-- expect-each write
SELECT txid_current()
SELECT pg_current_xact_id()
SELECT setval('order_numbers', 5000)
EXPLAIN ANALYZE INSERT INTO orders (customer_id, total) VALUES (1, 2)
EXPLAIN (ANALYZE, BUFFERS) UPDATE orders SET total = 0 WHERE id = 1

-- expect-each destructive
EXPLAIN ANALYZE DELETE FROM orders
EXPLAIN (ANALYZE true) DELETE FROM orders
EXPLAIN (ANALYZE, FORMAT JSON) UPDATE orders SET total = 0
EXPLAIN ANALYZE CREATE TABLE x AS SELECT * FROM orders; DROP TABLE x

-- expect-each privileged
SET ROLE app_owner
SET ROLE NONE
SET LOCAL ROLE postgres
SET SESSION AUTHORIZATION postgres
SET SESSION AUTHORIZATION DEFAULT
RESET ROLE
RESET SESSION AUTHORIZATION
SET search_path TO billing, public
SET search_path = pg_temp, public
SET client_encoding = 'SJIS'
SET NAMES 'LATIN1'
SET client_encoding = 'utf-16'
SET client_encoding = 'default'
SELECT set_config('client_encoding', 'latin1', false)
SET standard_conforming_strings = off
SET session_replication_role = replica
SET app.tenant_id = '42'
SET log_statement = 'none'
SET "role" = 'postgres'
SELECT set_config('role', 'postgres', false)
SELECT set_config('search_path', 'billing', false)
SELECT set_config('session_authorization', 'postgres', false)
SELECT set_config(name, 'x', false) FROM pg_settings LIMIT 1
SELECT set_config('statement_timeout', '1s', false), set_config('Role', 'x', false)
ALTER SYSTEM SET work_mem = '1GB'
ALTER SYSTEM RESET ALL
COPY orders TO '/tmp/orders.csv'
COPY orders FROM '/etc/passwd'
LOAD 'auto_explain'
CHECKPOINT
SELECT pg_reload_conf()
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app_read'
SELECT pg_cancel_backend(12345)
SELECT pg_read_file('/etc/passwd')
SELECT pg_ls_dir('.')
SELECT * FROM pg_ls_dir('/')
SELECT lo_import('/etc/passwd')
SELECT lo_export(16400, '/tmp/x')
SELECT dblink_exec('dbname=app', 'DROP TABLE orders')
SELECT * FROM dblink('dbname=app', 'SELECT 1') AS t(a int)
CREATE USER mallory WITH PASSWORD 'x'
ALTER USER app_read WITH SUPERUSER
REASSIGN OWNED BY app_write TO app_read

-- expect-each ddl
VACUUM FULL
CLUSTER orders USING orders_pkey
REINDEX TABLE orders
VACUUM (VERBOSE, ANALYZE) orders

-- expect-each unknown
SELECT my_function(1)
SELECT public.my_function(1)
SELECT * FROM my_table_function(1)
EXECUTE q_never_prepared
EXECUTE q_never_prepared(1, 2)
SELECT 1 OPERATOR(myschema.+) 2

-- PostgreSQL's grammar cannot EXPLAIN a DROP or TRUNCATE: it rejects the text, so infraveil calls it unknown.
-- expect-each unknown
EXPLAIN (ANALYZE off) DROP TABLE orders
EXPLAIN (ANALYZE on) TRUNCATE orders

-- Pool resets: start-up role parameters are refused, so these only return the session to its upstream login.
-- expect-each read
RESET ALL
DISCARD ALL

-- PostgreSQL's parser reads these, where sqlparser cannot: security labels and foreign schemas act on the server.
-- expect-each privileged
SECURITY LABEL ON TABLE orders IS 'secret'
IMPORT FOREIGN SCHEMA public FROM SERVER other INTO remote

-- Two-phase commit: a prepared transaction outlives the session, and COMMIT PREPARED may commit another session's work.
-- expect-each write
PREPARE TRANSACTION 'tx1'
COMMIT PREPARED 'tx1'
