-- Sample schema for `infraveil demo` and the integration tests.
-- Run by the sandbox as the cluster superuser, in database `app`.
-- Each upstream role is least-privilege: the firewall logs in as these.

CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION app_owner;
SET ROLE app_owner;

CREATE TABLE public.customers (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES public.customers(id),
    total_cents integer NOT NULL CHECK (total_cents >= 0),
    status      text NOT NULL DEFAULT 'new',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.invoices (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL,
    amount_cents integer NOT NULL,
    paid        boolean NOT NULL DEFAULT false
);

INSERT INTO public.customers (name, email)
SELECT 'Customer ' || g, 'customer' || g || '@example.com' FROM generate_series(1, 50) g;
INSERT INTO public.orders (customer_id, total_cents, status)
SELECT 1 + (g % 50), (g * 137) % 10000, CASE WHEN g % 3 = 0 THEN 'shipped' ELSE 'new' END
FROM generate_series(1, 200) g;
INSERT INTO billing.invoices (order_id, amount_cents, paid)
SELECT id, total_cents, id % 2 = 0 FROM public.orders;

GRANT USAGE ON SCHEMA public TO app_read, app_write;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_write;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_write;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO app_read;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app_write;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO app_write;

GRANT USAGE ON SCHEMA billing TO app_billing;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA billing TO app_billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA billing TO app_billing;
RESET ROLE;

-- Planner statistics, so approval previews estimate rows well.
ANALYZE;
