-- examgate schema, version 11: accounts as candidates use them.
--
-- The service agreement (网上报名协议) and the registration notice (注册须知) are versioned texts;
-- an account records which agreement version it accepted and when, and a newer version in force
-- asks for acceptance again at the next sign-in. Degrees (学位) are recorded beside education
-- records (学历); each record carries its verification status, set by an operator (or a future
-- online check), and a verified record cannot be deleted. Every change of an account is audited.

CREATE TABLE account_documents (
    kind          text        NOT NULL CHECK (kind IN ('agreement', 'notice')),
    version       integer     NOT NULL CHECK (version > 0),
    title         text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body          text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 100000),
    sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    published_by  text        NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, version)
);

-- Accounts made before this version accepted no recorded agreement: NULL, asked at next sign-in.
ALTER TABLE candidates
    ADD COLUMN agreement_version     integer CHECK (agreement_version > 0),
    ADD COLUMN agreement_accepted_at timestamptz,
    ADD CONSTRAINT candidates_agreement CHECK ((agreement_version IS NULL) = (agreement_accepted_at IS NULL));

-- not_checked: nobody has looked yet; verified: checked (online or by an operator); needs_manual:
-- the online check could not confirm it, an operator must look at the certificate; rejected: not genuine.
ALTER TABLE educations
    ADD COLUMN status      text        NOT NULL DEFAULT 'not_checked'
        CHECK (status IN ('not_checked', 'verified', 'needs_manual', 'rejected')),
    ADD COLUMN checked_by  text,
    ADD COLUMN checked_at  timestamptz,
    ADD COLUMN added_at    timestamptz;  -- when added after registration (注册维护); NULL: given at registration

CREATE TABLE degrees (
    id            bigserial   PRIMARY KEY,
    candidate_id  bigint      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    cert_no       text        NOT NULL CHECK (char_length(cert_no) BETWEEN 1 AND 64),
    school        text        NOT NULL CHECK (char_length(school) BETWEEN 1 AND 64),
    obtained_on   date        NOT NULL,
    major         text        NOT NULL CHECK (char_length(major) BETWEEN 1 AND 64),
    level         text        NOT NULL CHECK (level IN ('doctorate', 'master', 'bachelor')),
    kind          text        NOT NULL CHECK (kind IN ('academic', 'professional', 'honorary')),
    status        text        NOT NULL DEFAULT 'not_checked'
        CHECK (status IN ('not_checked', 'verified', 'needs_manual', 'rejected')),
    checked_by    text,
    checked_at    timestamptz,
    added_at      timestamptz,  -- when added after registration; NULL: given at registration
    CONSTRAINT degrees_cert_key UNIQUE (candidate_id, cert_no)
);
CREATE INDEX degrees_candidate ON degrees (candidate_id);

-- Every change to an account: who (the candidate, an operator), what, from where. Values that are
-- secrets (passwords, answers, codes) are never written here; a phone change keeps both numbers masked.
CREATE TABLE account_events (
    id            bigserial   PRIMARY KEY,
    candidate_id  bigint      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    action        text        NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),
    actor         text        NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 80),
    details       jsonb       NOT NULL DEFAULT '{}',
    address       text,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_events_candidate ON account_events (candidate_id, id);
