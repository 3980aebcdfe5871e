-- examgate schema, version 5: refunds, executed through the providers' refund APIs, and their ledger.
--
-- A payment that cannot keep its seat (late, for a closed order, a second trade, a registration
-- no longer payable) or a cancellation an operator approved becomes one refund row, in the
-- transaction that decided it. The worker sends due rows to the provider under refund_id (Alipay
-- out_request_no, WeChat Pay out_refund_no): the providers refund an id once, so a retry can never
-- refund twice. One refund per trade of an order (refunds_trade_key). refund_events is the
-- ledger: every request sent, every answer and notification received, every operator's action.

CREATE TABLE refunds (
    refund_id           text        PRIMARY KEY CHECK (refund_id ~ '^RF[0-9]{24}$'),
    order_no            text        NOT NULL REFERENCES orders (order_no),
    provider            text        NOT NULL CHECK (provider IN ('alipay', 'wechat')),
    provider_trade_no   text        NOT NULL CHECK (char_length(provider_trade_no) BETWEEN 1 AND 64),
    amount_fen          integer     NOT NULL CHECK (amount_fen > 0),
    reason              text        NOT NULL CHECK (reason ~ '^(order_closed|order_expired|second_payment|seat_released|cancellation|registration_[a-z_]{1,32})$'),
    -- the notification that made it (provider, event id), when a payment did
    event_id            text,
    status              text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'requested', 'succeeded', 'failed')),
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- when the worker sends it or asks about it next; NULL: nothing due (succeeded, given up, or
    -- waiting for an operator to execute it)
    next_attempt_at     timestamptz,
    -- the worker sending it now, until when: no two workers send one refund at once
    lease_id            text,
    lease_until         timestamptz,
    last_error          text,
    provider_refund_no  text,
    requested_by        text        NOT NULL CHECK (char_length(requested_by) BETWEEN 1 AND 100),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    CONSTRAINT refunds_trade_key UNIQUE (order_no, provider_trade_no),
    CHECK ((status = 'succeeded') = (finished_at IS NOT NULL)),
    CHECK (status <> 'succeeded' OR next_attempt_at IS NULL)
);
-- what the worker has to do next
CREATE INDEX refunds_due_idx ON refunds (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
-- the operators' list, newest first
CREATE INDEX refunds_created_idx ON refunds (created_at DESC, refund_id DESC);

CREATE TABLE refund_events (
    id           bigserial   PRIMARY KEY,
    refund_id    text        NOT NULL REFERENCES refunds (refund_id),
    kind         text        NOT NULL CHECK (kind IN ('created', 'queued', 'request', 'answer', 'query',
                                                      'notification', 'error')),
    -- a provider's notification id: a notification sent twice is recorded once
    provider     text        CHECK (provider IN ('alipay', 'wechat')),
    event_id     text,
    outcome      text,
    detail       text,
    actor        text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}',
    at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'notification') = (event_id IS NOT NULL)),
    CONSTRAINT refund_events_notification_key UNIQUE (provider, event_id)
);
CREATE INDEX refund_events_refund_idx ON refund_events (refund_id, id);

-- Payments recorded refund_pending before this version get their refund row, one per order and
-- trade. They wait for an operator (next_attempt_at NULL): money that has waited since before
-- the upgrade moves when a person says so, not when the worker first starts.
WITH waiting AS (
    SELECT DISTINCT ON (n.order_no, trade.no)
           n.order_no, n.provider, trade.no AS trade_no, n.amount_fen, n.reason, n.event_id, n.received_at
      FROM payment_notifications n
      JOIN orders o ON o.order_no = n.order_no
     CROSS JOIN LATERAL (SELECT COALESCE(n.payload -> 'resource' ->> 'transaction_id',
                                         n.payload ->> 'transaction_id', n.payload ->> 'trade_no',
                                         o.provider_trade_no) AS no) AS trade
     WHERE n.outcome = 'refund_pending' AND n.amount_fen > 0 AND char_length(trade.no) BETWEEN 1 AND 64
     ORDER BY n.order_no, trade.no, n.received_at, n.id
), made AS (
    INSERT INTO refunds (refund_id, order_no, provider, provider_trade_no, amount_fen, reason, event_id,
                         requested_by, created_at, updated_at)
    SELECT 'RF' || to_char(w.received_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')
                || lpad(((('x' || substr(md5(gen_random_uuid()::text), 1, 15))::bit(60)::bigint)
                         % 10000000000)::text, 10, '0'),
           w.order_no, w.provider, w.trade_no, w.amount_fen,
           CASE WHEN w.reason ~ '^(order_closed|order_expired|second_payment|seat_released|registration_[a-z_]{1,32})$'
                THEN w.reason ELSE 'order_closed' END,
           w.event_id, 'system', w.received_at, now()
      FROM waiting w
    ON CONFLICT DO NOTHING
    RETURNING refund_id
)
INSERT INTO refund_events (refund_id, kind, actor, detail)
SELECT refund_id, 'created', 'system', 'recorded refund_pending before refunds were executed; waiting for an operator'
  FROM made;
