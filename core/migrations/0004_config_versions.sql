-- examgate schema, version 4: live-config versions only grow in the audit. A config change is
-- audited with a version above every audited one; a note beside the config (an issued load-test
-- token) repeats the previous row's version with its config. Rows written before are left as
-- they are. The trigger serialises its writers, so two concurrent changes cannot both pass.
CREATE INDEX config_audit_version_idx ON config_audit (version);

CREATE FUNCTION config_audit_versions_grow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    audited bigint;
    previous config_audit%ROWTYPE;
BEGIN
    -- Held until commit: the next writer's queries below see this row.
    PERFORM pg_advisory_xact_lock(hashtext('config_audit_versions_grow'));
    SELECT max(version) INTO audited FROM config_audit;
    IF audited IS NULL OR NEW.version > audited THEN
        RETURN NEW;
    END IF;
    SELECT * INTO previous FROM config_audit ORDER BY id DESC LIMIT 1;
    IF NEW.version = previous.version AND NEW.config = previous.config THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'config version % is not above the audited version %', NEW.version, audited
        USING ERRCODE = 'unique_violation';
END
$$;

CREATE TRIGGER config_audit_versions_grow BEFORE INSERT ON config_audit
    FOR EACH ROW EXECUTE FUNCTION config_audit_versions_grow();
