-- A fenced provisioning step in one statement: `INSERT INTO commit_step (doc) VALUES (json)`
-- runs this trigger, which makes the same checks and writes, in the same order, as the general
-- commit path in `sql_common.rs` (fence, order compare-and-set, instance and credential
-- upserts, outbox inserts, finishing the job) for the batch shape the Provisioner writes at
-- every step. One statement is one trip to the connection's thread instead of one per write;
-- an insert takes the write lock before it reads, and a RAISE undoes the whole statement.
-- The document is built by `commit_step_doc` in `sql_common.rs`.
CREATE VIEW commit_step (doc) AS SELECT NULL;

CREATE TRIGGER commit_step_apply INSTEAD OF INSERT ON commit_step
BEGIN
    SELECT RAISE(ABORT, 'nemordp:lease_lost') WHERE NOT EXISTS (
        SELECT 1 FROM jobs
        WHERE id = NEW.doc ->> '$.fence.job_id'
          AND lease_owner = NEW.doc ->> '$.fence.owner'
          AND lease_epoch = NEW.doc ->> '$.fence.epoch'
          AND state = 'running');

    SELECT RAISE(ABORT, 'nemordp:order_conflict')
    WHERE NEW.doc ->> '$.order' IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM orders
        WHERE id = NEW.doc ->> '$.order.id' AND version = NEW.doc ->> '$.order.expected');
    UPDATE orders SET
        state_kind = NEW.doc ->> '$.order.state_kind',
        version = NEW.doc ->> '$.order.version',
        updated_at = NEW.doc ->> '$.order.updated_at',
        data = NEW.doc ->> '$.order.data'
    WHERE NEW.doc ->> '$.order' IS NOT NULL AND id = NEW.doc ->> '$.order.id';

    INSERT INTO instances (order_id, sealed_password, updated_at, data)
    SELECT NEW.doc ->> '$.instance.order_id',
           unhex(NEW.doc ->> '$.instance.sealed_password'),
           NEW.doc ->> '$.instance.updated_at',
           NEW.doc ->> '$.instance.data'
    WHERE NEW.doc ->> '$.instance' IS NOT NULL
    ON CONFLICT (order_id) DO UPDATE SET
        sealed_password = excluded.sealed_password,
        updated_at = excluded.updated_at,
        data = excluded.data;

    INSERT INTO credentials (order_id, username, key_id, sealed_password, created_at)
    SELECT NEW.doc ->> '$.credentials.order_id',
           NEW.doc ->> '$.credentials.username',
           NEW.doc ->> '$.credentials.key_id',
           unhex(NEW.doc ->> '$.credentials.sealed_password'),
           NEW.doc ->> '$.credentials.created_at'
    WHERE NEW.doc ->> '$.credentials' IS NOT NULL
    ON CONFLICT (order_id) DO UPDATE SET
        username = excluded.username,
        key_id = excluded.key_id,
        sealed_password = excluded.sealed_password,
        created_at = excluded.created_at;

    -- A taken id fails the primary key, which the caller reports as the entry existing.
    INSERT INTO outbox (id, order_id, kind, created_at, attempts, next_attempt_at, delivered_at,
                        last_error, failed_at, history)
    SELECT e.value ->> '$.id', e.value ->> '$.order_id', e.value ->> '$.kind',
           e.value ->> '$.created_at', e.value ->> '$.attempts', e.value ->> '$.next_attempt_at',
           e.value ->> '$.delivered_at', e.value ->> '$.last_error', e.value ->> '$.failed_at',
           e.value ->> '$.history'
    FROM json_each(NEW.doc, '$.outbox') AS e
    WHERE true;

    UPDATE jobs SET
        lease_owner = NULL,
        lease_until = NULL,
        updated_at = NEW.doc ->> '$.now',
        state = NEW.doc ->> '$.finish.state',
        run_at = COALESCE(NEW.doc ->> '$.finish.run_at', run_at),
        last_error = CASE WHEN NEW.doc ->> '$.finish.set_error' THEN NEW.doc ->> '$.finish.error'
                          ELSE last_error END
    WHERE NEW.doc ->> '$.finish' IS NOT NULL AND id = NEW.doc ->> '$.fence.job_id';
END;
