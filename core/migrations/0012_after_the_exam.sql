-- examgate schema, version 12: after the exam and before the next.
--
-- Operators' imports (exams, sites, scores, pass marks, certificates, integrity records) are
-- batches: validated in full, applied in one transaction, recorded once per batch id. Pass marks
-- (合格标准) are published per exam, level and subject. A passed subject stays valid for the exam
-- family's validity period (rolling validity); a candidate's archive number (网报档案号) in a
-- family is assigned at the first registration. Certificates are verified publicly. Candidates ask
-- for a score review (复核) within the exam's review window; a correction is a scores import.

-- One import batch, recorded when applied: the same batch id again applies nothing.
CREATE TABLE import_batches (
    batch_id    text        PRIMARY KEY CHECK (batch_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    kind        text        NOT NULL CHECK (kind IN
                    ('exams', 'sites', 'scores', 'pass_marks', 'certificates', 'integrity_records')),
    sha256      text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),  -- of the file as received
    rows        integer     NOT NULL CHECK (rows >= 0),
    applied     integer     NOT NULL CHECK (applied >= 0),  -- rows that changed something
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    seconds     numeric(10,3) NOT NULL DEFAULT 0
);
CREATE INDEX import_batches_created_idx ON import_batches (created_at DESC);

-- Pass marks per exam, level and subject (合格标准); absent: the subject's own pass_mark.
CREATE TABLE pass_marks (
    exam_id       bigint       NOT NULL,
    level_code    text         NOT NULL,
    subject_code  text         NOT NULL,
    pass_mark     numeric(5,1) NOT NULL CHECK (pass_mark >= 0),
    batch_id      text         REFERENCES import_batches (batch_id),
    published_at  timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (exam_id, level_code, subject_code),
    FOREIGN KEY (exam_id, level_code) REFERENCES exam_levels (exam_id, code) ON DELETE CASCADE,
    FOREIGN KEY (exam_id, subject_code) REFERENCES exam_subjects (exam_id, code) ON DELETE CASCADE
);

-- Where a score came from, and every correction of one (the old value kept in score_changes).
-- A whole exam's scores arrive as one import of a million rows, validated in full against the
-- catalogue and the tickets before anything is written; the constraints that would repeat those
-- checks row by row are left out (measured: ~4 µs a row each, two thirds of the apply): scores.batch_id
-- is written in the transaction that records its batch, scores.exam_id is implied by the subject's key,
-- and score_changes is the imports' own log of corrections.
ALTER TABLE scores
    DROP CONSTRAINT scores_exam_id_fkey,
    ADD COLUMN batch_id    text,
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();
CREATE INDEX scores_exam_idx ON scores (exam_id);

CREATE TABLE score_changes (
    id               bigserial    PRIMARY KEY,
    registration_id  bigint       NOT NULL,
    subject_code     text         NOT NULL,
    old_score        numeric(5,1) NOT NULL,
    new_score        numeric(5,1) NOT NULL,
    batch_id         text         NOT NULL,
    changed_at       timestamptz  NOT NULL DEFAULT now()
);
CREATE INDEX score_changes_registration_idx ON score_changes (registration_id, subject_code);

-- Exam families: how many consecutive exam years a passed subject stays valid.
CREATE TABLE exam_families (
    family          text        PRIMARY KEY CHECK (char_length(family) BETWEEN 1 AND 64),
    name            text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    validity_years  integer     NOT NULL CHECK (validity_years BETWEEN 1 AND 10),
    updated_by      text        NOT NULL DEFAULT 'system',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The archive (网报档案库): one archive number per candidate and exam family, from the first registration.
CREATE SEQUENCE archive_no_seq;
CREATE TABLE archive_numbers (
    candidate_id     bigint      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    family           text        NOT NULL CHECK (char_length(family) BETWEEN 1 AND 64),
    archive_no       text        NOT NULL UNIQUE,
    registration_id  bigint      NOT NULL REFERENCES registrations (id),
    assigned_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (candidate_id, family)
);

-- Certificates (资格证书), numbered nationally; verified by number and holder's name.
CREATE TABLE certificates (
    cert_no        text        PRIMARY KEY CHECK (cert_no ~ '^[0-9A-Za-z]{6,32}$'),
    name           text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    id_number      text        NOT NULL CHECK (char_length(id_number) BETWEEN 5 AND 32),
    exam_id        bigint      NOT NULL,
    level_code     text        NOT NULL,
    approved_on    date        NOT NULL,
    management_no  text        NOT NULL CHECK (char_length(management_no) BETWEEN 1 AND 64),
    batch_id       text        REFERENCES import_batches (batch_id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (exam_id, level_code) REFERENCES exam_levels (exam_id, code)
);
CREATE INDEX certificates_id_number_idx ON certificates (id_number);

-- Integrity records imported carry the person's name and their batch.
ALTER TABLE integrity_records
    ADD COLUMN name      text CHECK (char_length(name) BETWEEN 1 AND 64),
    ADD COLUMN batch_id  text REFERENCES import_batches (batch_id);

-- The score review window (复核) of an exam; NULL: no reviews.
ALTER TABLE exams
    ADD COLUMN score_review_opens_at   timestamptz,
    ADD COLUMN score_review_closes_at  timestamptz,
    ADD CONSTRAINT exams_score_review_window CHECK
        ((score_review_opens_at IS NULL) = (score_review_closes_at IS NULL)
         AND (score_review_opens_at IS NULL OR score_review_opens_at < score_review_closes_at));

-- Score review requests, one row per subject asked about.
CREATE TABLE score_reviews (
    id               bigserial    PRIMARY KEY,
    registration_id  bigint       NOT NULL REFERENCES registrations (id),
    candidate_id     bigint       NOT NULL REFERENCES candidates (id),
    exam_id          bigint       NOT NULL REFERENCES exams (id),
    subject_code     text         NOT NULL,
    status           text         NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'unchanged', 'corrected')),
    score_before     numeric(5,1) NOT NULL,
    score_after      numeric(5,1),
    reason           text         CHECK (char_length(reason) BETWEEN 1 AND 500),
    batch_id         text         REFERENCES import_batches (batch_id),
    requested_at     timestamptz  NOT NULL DEFAULT now(),
    decided_by       text,
    decided_at       timestamptz,
    CONSTRAINT score_reviews_subject_key UNIQUE (registration_id, subject_code),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK (status <> 'corrected' OR (score_after IS NOT NULL AND batch_id IS NOT NULL))
);
CREATE INDEX score_reviews_pending_idx ON score_reviews (exam_id, requested_at) WHERE status = 'pending';
