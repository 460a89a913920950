-- Shapes taken from ActiveRecord, Django, SQLAlchemy, Hibernate, Prisma,
-- sqlx/diesel and pgbench, as they reach the server.

-- expect-each read
SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2
SELECT 1 AS one FROM "users" WHERE "users"."email" = $1 LIMIT $2
SELECT COUNT(*) FROM "orders" WHERE "orders"."customer_id" = $1
SELECT "orders".* FROM "orders" WHERE "orders"."customer_id" IN ($1, $2, $3) ORDER BY "orders"."created_at" DESC
SELECT "schema_migrations"."version" FROM "schema_migrations" ORDER BY "schema_migrations"."version" ASC
SELECT "ar_internal_metadata"."value" FROM "ar_internal_metadata" WHERE "ar_internal_metadata"."key" = $1 LIMIT $2
SELECT "users"."id", "users"."email" FROM "users" INNER JOIN "memberships" ON "memberships"."user_id" = "users"."id" WHERE "memberships"."org_id" = $1
SELECT DISTINCT "tags"."name" FROM "tags" LEFT OUTER JOIN "taggings" ON "taggings"."tag_id" = "tags"."id"
SELECT SUM("line_items"."price" * "line_items"."quantity") FROM "line_items" WHERE "line_items"."order_id" = $1
SELECT "posts".* FROM "posts" WHERE ("posts"."published_at" <= $1) AND "posts"."deleted_at" IS NULL ORDER BY "posts"."id" ASC LIMIT $2 OFFSET $3
SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."username" FROM "auth_user" WHERE "auth_user"."username" = 'alice' LIMIT 21
SELECT "django_session"."session_key", "django_session"."session_data" FROM "django_session" WHERE ("django_session"."expire_date" > '2026-11-25T10:00:00+00:00'::timestamptz AND "django_session"."session_key" = 'abc')
SELECT "django_migrations"."id", "django_migrations"."app", "django_migrations"."name", "django_migrations"."applied" FROM "django_migrations"
SELECT COUNT(*) AS "__count" FROM "shop_order" WHERE "shop_order"."status" IN ('paid', 'shipped')
SELECT "shop_product"."id", "shop_product"."name" FROM "shop_product" WHERE UPPER("shop_product"."name"::text) LIKE UPPER('%lamp%') ORDER BY "shop_product"."name" ASC
SELECT (1) AS "a" FROM "shop_order" WHERE "shop_order"."id" = 12 LIMIT 1
SELECT users.id AS users_id, users.name AS users_name FROM users WHERE users.id = 5
SELECT users.id AS users_id, addresses_1.id AS addresses_1_id FROM users LEFT OUTER JOIN addresses AS addresses_1 ON users.id = addresses_1.user_id WHERE users.name = 'ed'
SELECT count(*) AS count_1 FROM (SELECT users.id AS users_id FROM users WHERE users.name LIKE 'e%') AS anon_1
SELECT anon_1.users_id FROM (SELECT users.id AS users_id, row_number() OVER (ORDER BY users.id) AS rn FROM users) AS anon_1 WHERE anon_1.rn BETWEEN 10 AND 20
select u1_0.id,u1_0.email,u1_0.name from users u1_0 where u1_0.id=$1
select o1_0.id,o1_0.total from orders o1_0 join customers c1_0 on c1_0.id=o1_0.customer_id where c1_0.email=$1
select count(o1_0.id) from orders o1_0 where o1_0.created_at>=$1
SELECT "public"."User"."id", "public"."User"."email" FROM "public"."User" WHERE ("public"."User"."email" = $1 AND 1=1) LIMIT $2 OFFSET $3
SELECT "public"."Post"."id" FROM "public"."Post" WHERE "public"."Post"."authorId" IN ($1,$2) OFFSET $3
SELECT COUNT(*) AS "_count._all" FROM (SELECT "public"."Post"."id" FROM "public"."Post" WHERE 1=1 OFFSET $1) AS "sub"
SELECT id, email, created_at FROM users WHERE id = $1
SELECT id, total FROM orders WHERE customer_id = $1 AND status = ANY($2) ORDER BY id LIMIT 50
SELECT EXISTS(SELECT 1 FROM users WHERE email = $1)
SELECT abalance FROM pgbench_accounts WHERE aid = $1
SELECT o.id, json_agg(li.*) AS items FROM orders o JOIN line_items li ON li.order_id = o.id WHERE o.id = $1 GROUP BY o.id
SELECT date_trunc('day', created_at) AS day, count(*) FROM orders WHERE created_at > now() - interval '30 days' GROUP BY 1 ORDER BY 1
SELECT c.name, sum(o.total) FILTER (WHERE o.status = 'paid') FROM customers c LEFT JOIN orders o ON o.customer_id = c.id GROUP BY c.name HAVING count(*) > 2
WITH recent AS (SELECT * FROM orders WHERE created_at > now() - interval '1 day') SELECT count(*) FROM recent
WITH RECURSIVE tree AS (SELECT id, parent_id FROM categories WHERE id = $1 UNION ALL SELECT c.id, c.parent_id FROM categories c JOIN tree t ON c.parent_id = t.id) SELECT * FROM tree
SELECT id FROM events WHERE payload @> '{"kind": "signup"}'::jsonb
SELECT id, payload->>'email' FROM events WHERE payload ? 'email'
SELECT * FROM orders WHERE (customer_id, created_at) > ($1, $2) ORDER BY customer_id, created_at LIMIT 100
SELECT id FROM documents WHERE to_tsvector('english', body) @@ plainto_tsquery('english', $1)
SELECT id, rank() OVER (PARTITION BY customer_id ORDER BY total DESC) FROM orders
SELECT gen_random_uuid()
SELECT now()
SELECT current_database(), current_user, version()
VALUES (1, 'a'), (2, 'b')
SELECT * FROM customers ORDER BY id LIMIT 10 OFFSET 20
SELECT * FROM generate_series(1, 10) AS g(n)
SELECT unnest(ARRAY[1, 2, 3])
SELECT coalesce(nullif(name, ''), 'anonymous') FROM customers
SELECT CASE WHEN total > 100 THEN 'big' ELSE 'small' END FROM orders
SELECT id FROM orders WHERE created_at BETWEEN $1 AND $2
SELECT lower(email) FROM customers WHERE email ILIKE $1
SELECT t.typname, t.typtype, t.typelem, r.rngsubtype, t.typbasetype, n.nspname, t.typrelid FROM pg_catalog.pg_type t LEFT OUTER JOIN pg_catalog.pg_range r ON r.rngtypid = t.oid INNER JOIN pg_catalog.pg_namespace n ON t.typnamespace = n.oid WHERE t.oid = $1
SELECT enumlabel FROM pg_catalog.pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder
SELECT attname, atttypid FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 ORDER BY attnum

-- expect-each write
INSERT INTO "users" ("email", "created_at", "updated_at") VALUES ($1, $2, $3) RETURNING "id"
UPDATE "users" SET "name" = $1, "updated_at" = $2 WHERE "users"."id" = $3
DELETE FROM "sessions" WHERE "sessions"."id" = $1
UPDATE "users" SET "sign_in_count" = COALESCE("sign_in_count", 0) + 1 WHERE "users"."id" = $1
DELETE FROM "taggings" WHERE "taggings"."taggable_id" = $1 AND "taggings"."taggable_type" = $2
INSERT INTO "ar_internal_metadata" ("key", "value", "created_at", "updated_at") VALUES ('environment', 'production', now(), now()) ON CONFLICT ("key") DO NOTHING RETURNING "key"
INSERT INTO "auth_user" ("password", "last_login", "is_superuser", "username") VALUES ('pbkdf2_sha256$...', NULL, false, 'bob') RETURNING "auth_user"."id"
UPDATE "auth_user" SET "last_login" = '2026-11-25T10:00:00+00:00'::timestamptz WHERE "auth_user"."id" = 1
DELETE FROM "django_session" WHERE "django_session"."session_key" IN ('a', 'b')
UPDATE "shop_order" SET "status" = 'shipped' WHERE "shop_order"."id" IN (SELECT U0."id" FROM "shop_order" U0 WHERE U0."paid_at" IS NOT NULL)
INSERT INTO users (name, fullname) VALUES ('spongebob', 'Spongebob Squarepants') RETURNING users.id
UPDATE users SET name='sandy' WHERE users.id = 2
DELETE FROM addresses WHERE addresses.id = 7
insert into users (email,name,id) values ($1,$2,$3)
update users set email=$1,name=$2 where id=$3
delete from users where id=$1
select nextval('users_seq')
INSERT INTO "public"."User" ("email","name") VALUES ($1,$2) RETURNING "public"."User"."id", "public"."User"."email"
UPDATE "public"."User" SET "name" = $1 WHERE ("public"."User"."id" = $2 AND 1=1) RETURNING "public"."User"."id"
DELETE FROM "public"."Post" WHERE ("public"."Post"."id" IN ($1,$2) AND 1=1)
INSERT INTO orders (customer_id, total) VALUES ($1, $2) RETURNING id
INSERT INTO events (kind, payload) SELECT 'import', to_jsonb(s) FROM staging s WHERE s.batch = $1
INSERT INTO counters (key, n) VALUES ($1, 1) ON CONFLICT (key) DO UPDATE SET n = counters.n + 1
UPDATE orders SET status = 'paid', paid_at = now() WHERE id = $1 AND status = 'pending' RETURNING id
UPDATE accounts SET balance = balance - $1 WHERE id = $2
UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2
UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)
DELETE FROM sessions WHERE expires_at < now()
DELETE FROM jobs WHERE id = (SELECT id FROM jobs WHERE locked_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *
UPDATE jobs SET locked_at = now() WHERE id IN (SELECT id FROM jobs WHERE locked_at IS NULL LIMIT 10 FOR UPDATE SKIP LOCKED)
SELECT * FROM jobs WHERE locked_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
SELECT * FROM accounts WHERE id = $1 FOR SHARE
MERGE INTO inventory i USING incoming n ON i.sku = n.sku WHEN MATCHED THEN UPDATE SET qty = i.qty + n.qty WHEN NOT MATCHED THEN INSERT (sku, qty) VALUES (n.sku, n.qty)
COPY orders (id, total) FROM STDIN
COPY pgbench_accounts FROM STDIN
COPY orders FROM STDIN WITH (FORMAT csv, HEADER true)
UPDATE orders o SET total = o.total * 1.1 FROM customers c WHERE o.customer_id = c.id AND c.tier = 'gold'
DELETE FROM line_items li USING orders o WHERE li.order_id = o.id AND o.status = 'cancelled'
WITH moved AS (DELETE FROM inbox WHERE received_at < $1 RETURNING *) INSERT INTO archive SELECT * FROM moved
INSERT INTO audit_log (actor, action) VALUES (current_user, 'login')
SELECT pg_advisory_lock(72707369)
SELECT pg_try_advisory_lock(1234567890)
SELECT pg_advisory_unlock(72707369)
SELECT pg_notify('jobs', 'new')
NOTIFY jobs, 'new'
LOCK TABLE orders IN SHARE ROW EXCLUSIVE MODE
REFRESH MATERIALIZED VIEW CONCURRENTLY daily_totals

-- A procedure's body is invisible to the firewall: unknown unless the role lists it in safe_functions.
-- expect-each unknown
CALL process_payments(10)
