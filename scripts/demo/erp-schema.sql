-- The demo ERP: customers and their orders. REPLICA IDENTITY FULL on customers makes
-- PostgreSQL send old rows, so change events carry the exact list of changed columns.
CREATE SCHEMA IF NOT EXISTS erp;
CREATE TABLE IF NOT EXISTS erp.customers (
  id          bigserial PRIMARY KEY,
  first_name  text NOT NULL,
  last_name   text NOT NULL,
  email       text,
  company     text,
  notes       text,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE erp.customers REPLICA IDENTITY FULL;
CREATE TABLE IF NOT EXISTS erp.orders (
  id          bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES erp.customers (id) ON DELETE CASCADE,
  title       text NOT NULL,
  amount      numeric(12, 2) NOT NULL,
  status      text NOT NULL DEFAULT 'open',
  created_at  timestamptz NOT NULL DEFAULT now()
);
