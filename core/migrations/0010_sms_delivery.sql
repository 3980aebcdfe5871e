-- examgate schema, version 10: the SMS outbox delivered through a provider (Alibaba Cloud SMS SendSms).
--
-- A row is one message: a template and its parameters (the provider renders the text; `body` is the
-- text as enqueued, for operators), an OutId chosen at enqueue (our idempotency key: the provider
-- lists it with the message, so a send whose answer was lost is looked up, not sent again), and its
-- delivery state:
--   queued   due at due_at (new, or waiting for a retry);
--   sending  claimed by a delivery worker until due_at (its lease, lease_id), or sent without an
--            answer (a timeout, a lost connection, a worker killed mid-batch): in doubt. Once due,
--            it is looked up at the provider by its OutId before anything is sent again;
--   sent     accepted by the provider (biz_id: its message id; null when found by a look-up);
--   failed   a permanent refusal, or retries used up (error says why).
-- A finished message's secret parameters (the codes) are scrubbed from params and body.

ALTER TABLE sms_outbox
    ADD COLUMN params          jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(params) = 'object'),
    ADD COLUMN status          text        NOT NULL DEFAULT 'queued'
                               CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    ADD COLUMN out_id          text        NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '')
                               CHECK (out_id ~ '^[A-Za-z0-9_-]{8,64}$'),
    ADD COLUMN due_at          timestamptz DEFAULT now(),
    ADD COLUMN lease_id        text        CHECK (char_length(lease_id) BETWEEN 1 AND 100),
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN throttled       integer     NOT NULL DEFAULT 0 CHECK (throttled >= 0),
    ADD COLUMN biz_id          text        CHECK (char_length(biz_id) BETWEEN 1 AND 100),
    ADD COLUMN error           text        CHECK (char_length(error) BETWEEN 1 AND 500),
    ADD COLUMN failed_at       timestamptz;

-- Messages from before delivery existed were never sent and their codes have long expired: sending
-- them now would only confuse. Those already marked sent by hand stay sent.
UPDATE sms_outbox SET status = 'sent', due_at = NULL WHERE sent_at IS NOT NULL;
UPDATE sms_outbox SET status = 'failed', due_at = NULL, failed_at = now(),
                      error = 'not sent: queued before SMS delivery existed'
 WHERE sent_at IS NULL;

ALTER TABLE sms_outbox
    ADD CONSTRAINT sms_outbox_due CHECK ((status IN ('queued', 'sending')) = (due_at IS NOT NULL)),
    ADD CONSTRAINT sms_outbox_sent CHECK ((status = 'sent') = (sent_at IS NOT NULL)),
    ADD CONSTRAINT sms_outbox_failed CHECK ((status = 'failed') = (failed_at IS NOT NULL));

-- OutIds are random; unique so that a look-up by OutId names one message.
CREATE UNIQUE INDEX sms_outbox_out_id_key ON sms_outbox (out_id);
-- What the delivery workers claim (due first) and count (queue depth, oldest waiting).
DROP INDEX sms_outbox_unsent_idx;
CREATE INDEX sms_outbox_due_idx ON sms_outbox (due_at, id) INCLUDE (status, created_at)
    WHERE status IN ('queued', 'sending');
