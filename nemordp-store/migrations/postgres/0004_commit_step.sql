-- A fenced provisioning step in one round trip: `SELECT nemordp_commit_step(doc)` makes the
-- same checks and writes, in the same order, as the general commit path in `sql_common.rs`
-- (fence, order compare-and-set, instance and credential upserts, outbox inserts, finishing
-- the job) for the batch shape the Provisioner writes at every step. A failed check raises,
-- which undoes the whole call. The document is built by `commit_step_doc` in `sql_common.rs`.
CREATE FUNCTION nemordp_commit_step(doc jsonb) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    fence jsonb := doc -> 'fence';
    ord jsonb := doc -> 'order';
    inst jsonb := doc -> 'instance';
    cred jsonb := doc -> 'credentials';
    fin jsonb := doc -> 'finish';
BEGIN
    PERFORM 1 FROM jobs
    WHERE id = fence ->> 'job_id' AND lease_owner = fence ->> 'owner'
      AND lease_epoch = (fence ->> 'epoch')::bigint AND state = 'running'
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'nemordp:lease_lost';
    END IF;

    IF ord IS NOT NULL THEN
        UPDATE orders SET
            state_kind = ord ->> 'state_kind',
            version = (ord ->> 'version')::bigint,
            updated_at = (ord ->> 'updated_at')::bigint,
            data = ord ->> 'data'
        WHERE id = ord ->> 'id' AND version = (ord ->> 'expected')::bigint;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'nemordp:order_conflict';
        END IF;
    END IF;

    IF inst IS NOT NULL THEN
        INSERT INTO instances (order_id, sealed_password, updated_at, data)
        VALUES (inst ->> 'order_id', decode(inst ->> 'sealed_password', 'hex'),
                (inst ->> 'updated_at')::bigint, inst ->> 'data')
        ON CONFLICT (order_id) DO UPDATE SET
            sealed_password = excluded.sealed_password,
            updated_at = excluded.updated_at,
            data = excluded.data;
    END IF;

    IF cred IS NOT NULL THEN
        INSERT INTO credentials (order_id, username, key_id, sealed_password, created_at)
        VALUES (cred ->> 'order_id', cred ->> 'username', cred ->> 'key_id',
                decode(cred ->> 'sealed_password', 'hex'), (cred ->> 'created_at')::bigint)
        ON CONFLICT (order_id) DO UPDATE SET
            username = excluded.username,
            key_id = excluded.key_id,
            sealed_password = excluded.sealed_password,
            created_at = excluded.created_at;
    END IF;

    -- A taken id fails the primary key, which the caller reports as the entry existing.
    INSERT INTO outbox (id, order_id, kind, created_at, attempts, next_attempt_at, delivered_at,
                        last_error, failed_at, history)
    SELECT e ->> 'id', e ->> 'order_id', e ->> 'kind', (e ->> 'created_at')::bigint,
           (e ->> 'attempts')::bigint, (e ->> 'next_attempt_at')::bigint,
           (e ->> 'delivered_at')::bigint, e ->> 'last_error', (e ->> 'failed_at')::bigint,
           e ->> 'history'
    FROM jsonb_array_elements(doc -> 'outbox') AS e;

    IF fin IS NOT NULL THEN
        UPDATE jobs SET
            lease_owner = NULL,
            lease_until = NULL,
            updated_at = (doc ->> 'now')::bigint,
            state = fin ->> 'state',
            run_at = COALESCE((fin ->> 'run_at')::bigint, run_at),
            last_error = CASE WHEN (fin ->> 'set_error')::boolean THEN fin ->> 'error'
                              ELSE last_error END
        WHERE id = fence ->> 'job_id';
    END IF;
END
$fn$;
