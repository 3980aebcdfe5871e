-- examgate schema, version 2: the SMS outbox behind password recovery.
-- The system never talks to an SMS gateway itself: a row here IS the message. A delivery
-- worker (or an operator, through `examgate sms outbox`) reads unsent rows, sends them,
-- and records sent_at and attempts. Bodies hold live verification codes: treat the table
-- as secret and keep it short (delete delivered rows after a retention period).

CREATE TABLE sms_outbox (
    id          bigserial   PRIMARY KEY,
    phone       text        NOT NULL CHECK (phone ~ '^1[3-9][0-9]{9}$'),
    template    text        NOT NULL CHECK (template ~ '^[a-z][a-z0-9_]{0,63}$'),
    body        text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 500),
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    CHECK (sent_at IS NULL OR sent_at >= created_at)
);
-- newest first for one phone (`examgate sms outbox --phone …`, tests reading a code)
CREATE INDEX sms_outbox_phone_idx ON sms_outbox (phone, id DESC);
-- what a delivery worker still has to send
CREATE INDEX sms_outbox_unsent_idx ON sms_outbox (id) WHERE sent_at IS NULL;
