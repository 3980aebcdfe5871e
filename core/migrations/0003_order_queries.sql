-- examgate schema, version 3: when order reconciliation last asked the provider about an order,
-- so each pass asks about the orders it asked least recently (a pending order not yet expired
-- stays pending after a query; without this the same oldest ones would be asked every pass).
ALTER TABLE orders ADD COLUMN last_queried_at timestamptz;
CREATE INDEX orders_pending_query_idx ON orders (last_queried_at NULLS FIRST, created_at) WHERE status = 'pending';
