-- examgate schema, version 1: the source of truth behind the peak-hour edge.
-- Rules live in constraints so that no code path, however concurrent, can break them.

CREATE TABLE candidates (
    id                    bigserial PRIMARY KEY,
    username              text        NOT NULL,
    password_hash         text        NOT NULL,
    name                  text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    id_type               text        NOT NULL CHECK (id_type IN
                              ('resident_id', 'passport', 'military_officer', 'hk_macau_permit', 'taiwan_permit')),
    id_number             text        NOT NULL CHECK (char_length(id_number) BETWEEN 5 AND 32),
    phone                 text        NOT NULL CHECK (phone ~ '^1[3-9][0-9]{9}$'),
    email                 text        NOT NULL,
    security_question     text        NOT NULL,
    security_answer_hash  text        NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT candidates_username_key  UNIQUE (username),
    CONSTRAINT candidates_id_number_key UNIQUE (id_type, id_number),
    CONSTRAINT candidates_phone_key     UNIQUE (phone)
);

CREATE TABLE educations (
    id            bigserial PRIMARY KEY,
    candidate_id  bigint NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    cert_no       text   NOT NULL,
    school        text   NOT NULL,
    graduated_on  date   NOT NULL,
    major         text   NOT NULL,
    level         text   NOT NULL CHECK (level IN ('doctorate', 'master', 'bachelor', 'college', 'secondary')),
    mode          text   NOT NULL CHECK (mode IN ('full_time', 'part_time', 'self_study', 'online'))
);
CREATE INDEX educations_candidate_idx ON educations (candidate_id);

CREATE TABLE exams (
    id                      bigserial PRIMARY KEY,
    code                    text        NOT NULL UNIQUE,
    name                    text        NOT NULL,
    registration_opens_at   timestamptz NOT NULL,
    registration_closes_at  timestamptz NOT NULL,
    ticket_print_opens_at   timestamptz NOT NULL,
    ticket_print_closes_at  timestamptz NOT NULL,
    exam_starts_at          timestamptz NOT NULL,
    score_release_at        timestamptz NOT NULL,
    fee_per_subject_fen     integer     NOT NULL CHECK (fee_per_subject_fen > 0),
    CHECK (registration_opens_at < registration_closes_at),
    CHECK (ticket_print_opens_at < ticket_print_closes_at)
);

CREATE TABLE exam_levels (
    exam_id  bigint NOT NULL REFERENCES exams (id) ON DELETE CASCADE,
    code     text   NOT NULL,
    name     text   NOT NULL,
    position integer NOT NULL DEFAULT 0,
    PRIMARY KEY (exam_id, code)
);

CREATE TABLE exam_specialties (
    exam_id     bigint NOT NULL,
    level_code  text   NOT NULL,
    code        text   NOT NULL,
    name        text   NOT NULL,
    position    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (exam_id, level_code, code),
    FOREIGN KEY (exam_id, level_code) REFERENCES exam_levels (exam_id, code) ON DELETE CASCADE
);

-- Subjects are per exam (codes unique within it, so scores key on them);
-- which subjects a specialty takes is the mapping below (a shared subject appears under many).
CREATE TABLE exam_subjects (
    exam_id    bigint       NOT NULL REFERENCES exams (id) ON DELETE CASCADE,
    code       text         NOT NULL,
    name       text         NOT NULL,
    starts_at  timestamptz  NOT NULL,
    ends_at    timestamptz  NOT NULL,
    full_mark  numeric(5,1) NOT NULL DEFAULT 100 CHECK (full_mark > 0),
    pass_mark  numeric(5,1) NOT NULL DEFAULT 60 CHECK (pass_mark >= 0),
    position   integer      NOT NULL DEFAULT 0,
    PRIMARY KEY (exam_id, code),
    CHECK (starts_at < ends_at),
    CHECK (pass_mark <= full_mark)
);

CREATE TABLE exam_specialty_subjects (
    exam_id         bigint NOT NULL,
    level_code      text   NOT NULL,
    specialty_code  text   NOT NULL,
    subject_code    text   NOT NULL,
    PRIMARY KEY (exam_id, level_code, specialty_code, subject_code),
    FOREIGN KEY (exam_id, level_code, specialty_code)
        REFERENCES exam_specialties (exam_id, level_code, code) ON DELETE CASCADE,
    FOREIGN KEY (exam_id, subject_code) REFERENCES exam_subjects (exam_id, code) ON DELETE CASCADE
);

CREATE TABLE exam_sites (
    id        bigserial PRIMARY KEY,
    exam_id   bigint  NOT NULL REFERENCES exams (id) ON DELETE CASCADE,
    province  char(2) NOT NULL CHECK (province ~ '^[1-8][0-9]$'),
    city      text    NOT NULL,
    name      text    NOT NULL,
    address   text    NOT NULL,
    capacity  integer NOT NULL CHECK (capacity >= 0),
    rooms     integer NOT NULL CHECK (rooms > 0),
    seats_per_room integer NOT NULL DEFAULT 30 CHECK (seats_per_room > 0),
    UNIQUE (exam_id, name),
    CHECK (capacity <= rooms * seats_per_room)
);
CREATE INDEX exam_sites_exam_province_idx ON exam_sites (exam_id, province);

CREATE TABLE registrations (
    id               bigserial PRIMARY KEY,
    candidate_id     bigint      NOT NULL REFERENCES candidates (id),
    exam_id          bigint      NOT NULL REFERENCES exams (id),
    province         char(2)     NOT NULL,
    city             text        NOT NULL,
    level_code       text        NOT NULL,
    specialty_code   text        NOT NULL,
    subjects         text[]      NOT NULL CHECK (cardinality(subjects) > 0),
    work_years       integer     NOT NULL CHECK (work_years BETWEEN 0 AND 60),
    status           text        NOT NULL DEFAULT 'draft'
                         CHECK (status IN ('draft', 'confirmed', 'paid', 'cancelled', 'expired')),
    site_id          bigint      REFERENCES exam_sites (id),
    hold_expires_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT registrations_candidate_exam_key UNIQUE (candidate_id, exam_id),
    -- a paid registration always has its seat
    CHECK (status <> 'paid' OR site_id IS NOT NULL)
);
CREATE INDEX registrations_exam_site_idx ON registrations (exam_id, site_id);

CREATE TABLE orders (
    order_no         text        PRIMARY KEY,
    registration_id  bigint      NOT NULL REFERENCES registrations (id),
    provider         text        NOT NULL CHECK (provider IN ('alipay', 'wechat')),
    amount_fen       integer     NOT NULL CHECK (amount_fen > 0),
    status           text        NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'paid', 'closed', 'refund_pending')),
    provider_trade_no text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    paid_at          timestamptz,
    CHECK (status <> 'paid' OR paid_at IS NOT NULL)
);
-- one pending order per registration, and one paid order per registration
CREATE UNIQUE INDEX orders_one_pending_idx ON orders (registration_id) WHERE status = 'pending';
CREATE UNIQUE INDEX orders_one_paid_idx ON orders (registration_id) WHERE status = 'paid';

-- Every notification a provider sent, accepted or not; the provider's event id makes retries no-ops.
CREATE TABLE payment_notifications (
    id           bigserial   PRIMARY KEY,
    provider     text        NOT NULL CHECK (provider IN ('alipay', 'wechat')),
    event_id     text        NOT NULL,
    order_no     text,
    amount_fen   integer,
    app_id       text,
    outcome      text        NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'refund_pending')),
    reason       text,
    payload      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_notifications_event_key UNIQUE (provider, event_id)
);
CREATE INDEX payment_notifications_order_idx ON payment_notifications (order_no);

CREATE TABLE admission_tickets (
    ticket_no        text        PRIMARY KEY,
    registration_id  bigint      NOT NULL UNIQUE REFERENCES registrations (id),
    exam_id          bigint      NOT NULL REFERENCES exams (id),
    site_id          bigint      NOT NULL REFERENCES exam_sites (id),
    room             integer     NOT NULL CHECK (room > 0),
    seat_no          integer     NOT NULL CHECK (seat_no > 0),
    issued_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT admission_tickets_seat_key UNIQUE (site_id, room, seat_no)
);

CREATE TABLE scores (
    registration_id  bigint       NOT NULL REFERENCES registrations (id),
    exam_id          bigint       NOT NULL REFERENCES exams (id),
    subject_code     text         NOT NULL,
    score            numeric(5,1) NOT NULL CHECK (score >= 0),
    PRIMARY KEY (registration_id, subject_code),
    FOREIGN KEY (exam_id, subject_code) REFERENCES exam_subjects (exam_id, code)
);

CREATE TABLE config_audit (
    id          bigserial   PRIMARY KEY,
    version     bigint      NOT NULL,
    actor       text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    diff        jsonb       NOT NULL,
    config      jsonb       NOT NULL
);
CREATE INDEX config_audit_changed_idx ON config_audit (changed_at DESC);
