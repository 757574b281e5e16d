-- nemordp store schema, version 1 (PostgreSQL). Forward-only: never edit an applied migration.
-- Timestamps are unix milliseconds; versions and counters are BIGINT; complex fields are JSON.
CREATE TABLE orders (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    state_kind  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX orders_state_kind ON orders (state_kind, id);

CREATE TABLE payments (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    order_id    TEXT COLLATE "C" NOT NULL,
    method      TEXT NOT NULL,
    reference   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    data        TEXT NOT NULL,
    UNIQUE (method, reference)
);
CREATE INDEX payments_order ON payments (order_id, created_at, id);

CREATE TABLE instances (
    order_id        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    sealed_password BYTEA,
    updated_at      BIGINT NOT NULL,
    data            TEXT NOT NULL
);

CREATE TABLE credentials (
    order_id        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    username        TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    sealed_password BYTEA NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE outbox (
    id              TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    order_id        TEXT COLLATE "C" NOT NULL,
    kind            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
CREATE INDEX outbox_order ON outbox (order_id, created_at, id);

CREATE TABLE inbound_events (
    source      TEXT NOT NULL,
    event_key   TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, event_key)
);

CREATE TABLE jobs (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    order_id    TEXT COLLATE "C" NOT NULL,
    unique_key  TEXT UNIQUE,
    state       TEXT NOT NULL,
    run_at      BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    lease_owner TEXT,
    lease_epoch BIGINT NOT NULL,
    lease_until BIGINT,
    last_error  TEXT,
    note        TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (state, run_at, id);
CREATE INDEX jobs_order ON jobs (order_id, created_at, id);
