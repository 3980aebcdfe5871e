-- examgate schema, version 9: photo review, change requests, the photo audit, and photo bytes kept once.
--
-- The checks approve a photo or send it to review (needs_review); an operator approves or rejects
-- it with a reason. An approved photo is locked: the candidate cannot replace it until an operator
-- grants a change request, which allows exactly one new upload (the request is then used). A
-- sample of the photos the checks approved is marked for a human look too (sampled); it stays
-- approved meanwhile. Every upload, decision and request is written to photo_events.

-- The normalised JPEGs by content: a version row names its bytes by SHA-256, so the same picture
-- uploaded again (or given to every seeded candidate) is kept once. Like an object store's key.
CREATE TABLE photo_blobs (
    sha256 text  PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    jpeg   bytea NOT NULL CHECK (octet_length(jpeg) BETWEEN 1 AND 65536)
);
INSERT INTO photo_blobs (sha256, jpeg) SELECT DISTINCT ON (sha256) sha256, jpeg FROM photos ORDER BY sha256;
ALTER TABLE photos ADD COLUMN bytes integer;
UPDATE photos SET bytes = octet_length(jpeg);
ALTER TABLE photos
    ALTER COLUMN bytes SET NOT NULL,
    ADD CONSTRAINT photos_bytes CHECK (bytes BETWEEN 1 AND 65536),
    DROP COLUMN jpeg,
    ADD CONSTRAINT photos_blob FOREIGN KEY (sha256) REFERENCES photo_blobs (sha256);

ALTER TABLE photos
    ADD COLUMN sampled       boolean     NOT NULL DEFAULT false,
    ADD COLUMN reviewed_at   timestamptz,
    ADD COLUMN reviewed_by   text        CHECK (char_length(reviewed_by) BETWEEN 1 AND 64),
    ADD COLUMN review_reason text        CHECK (char_length(review_reason) BETWEEN 1 AND 200),
    -- Only an approved photo is locked; a rejected one has its reason.
    ADD CONSTRAINT photos_locked_approved CHECK (NOT locked OR status = 'approved'),
    ADD CONSTRAINT photos_rejected_reason CHECK (status <> 'rejected' OR review_reason IS NOT NULL);

-- The photos waiting for a human look, oldest first.
CREATE INDEX photos_to_review ON photos (id)
    WHERE current AND reviewed_at IS NULL AND (status = 'needs_review' OR sampled);

CREATE TABLE photo_change_requests (
    id              bigserial   PRIMARY KEY,
    candidate_id    bigint      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    photo_id        bigint      NOT NULL REFERENCES photos (id) ON DELETE CASCADE,
    reason          text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 200),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'granted', 'refused', 'used')),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    decided_by      text        CHECK (char_length(decided_by) BETWEEN 1 AND 64),
    decision_reason text        CHECK (char_length(decision_reason) BETWEEN 1 AND 200),
    used_at         timestamptz,
    new_photo_id    bigint      REFERENCES photos (id) ON DELETE SET NULL,
    CONSTRAINT photo_change_requests_decided CHECK ((status = 'pending') = (decided_at IS NULL)),
    CONSTRAINT photo_change_requests_used CHECK ((status = 'used') = (used_at IS NOT NULL))
);
-- At most one request open (waiting for a decision, or granted and not yet used) per candidate.
CREATE UNIQUE INDEX photo_change_requests_one_open ON photo_change_requests (candidate_id)
    WHERE status IN ('pending', 'granted');
CREATE INDEX photo_change_requests_pending ON photo_change_requests (id) WHERE status = 'pending';

CREATE TABLE photo_events (
    id           bigserial   PRIMARY KEY,
    candidate_id bigint      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    photo_id     bigint      REFERENCES photos (id) ON DELETE SET NULL,
    request_id   bigint      REFERENCES photo_change_requests (id) ON DELETE SET NULL,
    action       text        NOT NULL CHECK (action IN ('upload', 'approve', 'reject', 'change_request',
                                                        'change_grant', 'change_refuse', 'change_used')),
    actor        text        NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 80),
    reason       text,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX photo_events_candidate ON photo_events (candidate_id, id);

-- Photos uploaded before this version and approved by the checks are locked like new ones.
UPDATE photos SET locked = true WHERE current AND status = 'approved';
