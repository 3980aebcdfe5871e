-- examgate schema, version 7: the registration lifecycle of a qualification exam.
--
-- A registration is a draft until the candidate confirms it (报名信息确认); confirming runs the
-- automatic review, which approves it, sends it to online or on-site review, or rejects it with
-- reasons. Only an approved registration holds a seat and pays. Every transition bumps
-- registrations.version (operators decide with If-Match on it) and is written to
-- registration_events in the same transaction. The rules of which transition is allowed from
-- which state live in core/lifecycle.py; the constraints below hold whatever the code does.

-- The exam family an integrity record applies to (one family spans the years of one exam);
-- NULL: the exam is a family of its own, named by its code.
ALTER TABLE exams ADD COLUMN family text CHECK (char_length(family) BETWEEN 1 AND 64);

-- Review points (审核点): where on-site review happens, per city.
CREATE TABLE review_points (
    id        bigserial PRIMARY KEY,
    exam_id   bigint  NOT NULL REFERENCES exams (id) ON DELETE CASCADE,
    province  char(2) NOT NULL CHECK (province ~ '^[1-8][0-9]$'),
    city      text    NOT NULL CHECK (char_length(city) BETWEEN 1 AND 32),
    name      text    NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    address   text    NOT NULL DEFAULT '',
    CONSTRAINT review_points_name_key UNIQUE (exam_id, province, name)
);

-- How one province reviews one exam. Absent: automatic review under the commitment, online
-- review when a human has to look, withdrawal allowed until payment.
CREATE TABLE exam_review_rules (
    exam_id        bigint  NOT NULL REFERENCES exams (id) ON DELETE CASCADE,
    province       char(2) NOT NULL CHECK (province ~ '^[1-8][0-9]$'),
    review_mode    text    NOT NULL CHECK (review_mode IN ('auto', 'online', 'onsite')),
    manual_mode    text    NOT NULL CHECK (manual_mode IN ('online', 'onsite')),
    commitment     boolean NOT NULL,
    withdraw_rule  text    NOT NULL CHECK (withdraw_rule IN ('until_payment', 'until_review', 'locked')),
    PRIMARY KEY (exam_id, province)
);

-- Eligibility per exam and level, declared as data (core/qualification.py validates the shape).
CREATE TABLE eligibility_rules (
    exam_id     bigint      NOT NULL,
    level_code  text        NOT NULL,
    rules       jsonb       NOT NULL,
    updated_by  text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exam_id, level_code),
    FOREIGN KEY (exam_id, level_code) REFERENCES exam_levels (exam_id, code) ON DELETE CASCADE
);

-- The notice, commitment and instructions texts, versioned per exam; the newest is shown.
CREATE TABLE exam_documents (
    exam_id       bigint      NOT NULL REFERENCES exams (id) ON DELETE CASCADE,
    kind          text        NOT NULL CHECK (kind IN ('notice', 'commitment', 'instructions')),
    version       integer     NOT NULL CHECK (version > 0),
    title         text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    body          text        NOT NULL CHECK (char_length(body) BETWEEN 1 AND 100000),
    sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    published_by  text        NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (exam_id, kind, version)
);

-- The integrity archive (诚信档案库): a person recorded for a violation in an exam family,
-- for a period. '*' as the family applies to every exam.
CREATE TABLE integrity_records (
    id          bigserial   PRIMARY KEY,
    id_number   text        NOT NULL CHECK (char_length(id_number) BETWEEN 5 AND 32),
    exam_family text        NOT NULL CHECK (char_length(exam_family) BETWEEN 1 AND 64),
    violation   text        NOT NULL CHECK (char_length(violation) BETWEEN 1 AND 200),
    starts_on   date        NOT NULL,
    ends_on     date        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    removed_by  text,
    removed_at  timestamptz,
    CHECK (starts_on <= ends_on),
    CONSTRAINT integrity_records_entry_key UNIQUE (id_number, exam_family, starts_on)
);
CREATE INDEX integrity_records_id_number_idx ON integrity_records (id_number) WHERE removed_at IS NULL;

-- Statuses of the lifecycle; a confirmed registration of version 1 had passed every check
-- there was, so it is approved.
ALTER TABLE registrations DROP CONSTRAINT registrations_status_check;
UPDATE registrations SET status = 'approved' WHERE status = 'confirmed';
ALTER TABLE registrations ADD CONSTRAINT registrations_status_check CHECK (status IN
    ('draft', 'under_review', 'onsite_review', 'approved', 'rejected', 'paid', 'cancelled', 'expired'));
ALTER TABLE registrations
    ADD COLUMN version          integer NOT NULL DEFAULT 1 CHECK (version > 0),
    ADD COLUMN review_point_id  bigint  REFERENCES review_points (id),
    ADD COLUMN review_mode      text    CHECK (review_mode IN ('auto', 'online', 'onsite')),
    ADD COLUMN reasons          jsonb   NOT NULL DEFAULT '[]',
    ADD COLUMN major_acknowledged boolean NOT NULL DEFAULT false,
    ADD COLUMN submitted_at     timestamptz,
    ADD COLUMN decided_by       text,
    ADD COLUMN decided_at       timestamptz;
CREATE INDEX registrations_review_idx ON registrations (exam_id, province, status, submitted_at)
    WHERE status IN ('under_review', 'onsite_review');

-- The signed commitment (告知承诺): the text's version and hash, when, from where, by whom.
CREATE TABLE registration_commitments (
    registration_id  bigint      PRIMARY KEY REFERENCES registrations (id),
    candidate_id     bigint      NOT NULL REFERENCES candidates (id),
    version          integer     NOT NULL,
    text_sha256      text        NOT NULL CHECK (text_sha256 ~ '^[0-9a-f]{64}$'),
    signed_at        timestamptz NOT NULL DEFAULT now(),
    address          text        NOT NULL,
    withdrawn_at     timestamptz
);

-- Every transition, with who made it and why.
CREATE TABLE registration_events (
    id               bigserial   PRIMARY KEY,
    registration_id  bigint      NOT NULL REFERENCES registrations (id),
    action           text        NOT NULL,
    from_status      text        NOT NULL,
    to_status        text        NOT NULL,
    version          integer     NOT NULL,
    actor            text        NOT NULL,
    reasons          jsonb       NOT NULL DEFAULT '[]',
    address          text,
    at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registration_events_registration_idx ON registration_events (registration_id, id);

-- A paid candidate giving up asks; an operator approves it into a refund.
CREATE TABLE cancellation_requests (
    registration_id  bigint      PRIMARY KEY REFERENCES registrations (id),
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'refused')),
    requested_at     timestamptz NOT NULL DEFAULT now(),
    decided_by       text,
    decided_at       timestamptz,
    note             text,
    refund_id        text
);
