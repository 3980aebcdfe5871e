-- examgate schema, version 6: operators as named accounts with a role and a scope, their bearer
-- tokens and the audit of every change to either.
--
-- Qualification review is done by each province's exam authority, so an operator has a role
-- (reviewer < operator < admin: which admin routes it may call) and a scope (provinces NULL:
-- national; else the two-digit province codes of exam_sites.province it may see). Accounts named
-- in EXAMGATE_ADMIN_TOKENS are not here: they are national admins from the settings (bootstrap).
CREATE TABLE operators (
    id            bigserial   PRIMARY KEY,
    name          text        NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9._-]{1,31}$'),
    display_name  text        NOT NULL DEFAULT '' CHECK (char_length(display_name) <= 64),
    role          text        NOT NULL CHECK (role IN ('reviewer', 'operator', 'admin')),
    provinces     text[]      CHECK (provinces IS NULL OR (cardinality(provinces) BETWEEN 1 AND 40
                                     AND provinces <@ ARRAY['11', '12', '13', '14', '15', '21', '22', '23',
                                         '31', '32', '33', '34', '35', '36', '37', '41', '42', '43', '44',
                                         '45', '46', '50', '51', '52', '53', '54', '61', '62', '63', '64',
                                         '65', '71', '81', '82']::text[])),
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- A token is 256 bits from the operating system's CSPRNG, shown once when issued. Only its SHA-256
-- digest is kept: with that much entropy a fast hash is enough (nobody can guess inputs to try
-- against a leaked digest), and it lets the gateway find the token with one indexed lookup instead
-- of a slow password hash per request. Every token expires; revoking keeps the row for the audit.
CREATE TABLE operator_tokens (
    id            bigserial   PRIMARY KEY,
    operator_id   bigint      NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    token_hash    bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    label         text        NOT NULL DEFAULT '' CHECK (char_length(label) <= 64),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX operator_tokens_operator_idx ON operator_tokens (operator_id, id);

-- Who did what to whom, and when: written in the transaction of the change it records.
-- action: create | update | token_issue | token_revoke; changes: {field: {old, new}} or the
-- token's id, label and expiry (never the token).
CREATE TABLE operator_audit (
    id          bigserial   PRIMARY KEY,
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('create', 'update', 'token_issue', 'token_revoke')),
    operator    text        NOT NULL,
    token_id    bigint,
    changes     jsonb       NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_audit_operator_idx ON operator_audit (operator, id DESC);
