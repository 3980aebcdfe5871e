-- examgate schema, version 8: candidates' registration photos.
--
-- One row per uploaded version: the normalised JPEG (295 × 413, about 10 KB, no metadata) with its
-- SHA-256, the status the checks gave it and the borderline checks that sent it to review. Exactly
-- one version is a candidate's current photo (the partial unique index); an upload makes the new
-- row current and keeps the old one. A locked current photo (reviewed for a registration) is not
-- replaced.
CREATE TABLE photos (
    id            bigserial   PRIMARY KEY,
    candidate_id  bigint      NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    jpeg          bytea       NOT NULL CHECK (octet_length(jpeg) BETWEEN 1 AND 65536),
    sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    width         integer     NOT NULL CHECK (width > 0),
    height        integer     NOT NULL CHECK (height > 0),
    status        text        NOT NULL CHECK (status IN ('approved', 'needs_review', 'rejected')),
    problems      text[]      NOT NULL DEFAULT '{}',
    uploaded_at   timestamptz NOT NULL DEFAULT now(),
    current       boolean     NOT NULL DEFAULT true,
    locked        boolean     NOT NULL DEFAULT false
);

CREATE UNIQUE INDEX photos_one_current ON photos (candidate_id) WHERE current;
CREATE INDEX photos_candidate ON photos (candidate_id, uploaded_at DESC);
