-- Backend-defined records (payment-backend state that commits with the order change) and
-- derivation-index reservations (one address per payment request, never shared).
CREATE TABLE records (
    collection  TEXT NOT NULL,
    record_key  TEXT NOT NULL,
    version     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (collection, record_key)
);

CREATE TABLE index_counters (
    scope       TEXT PRIMARY KEY NOT NULL,
    next_idx    BIGINT NOT NULL
);

CREATE TABLE index_reservations (
    scope       TEXT NOT NULL,
    claimant    TEXT NOT NULL,
    idx         BIGINT NOT NULL,
    reserved_at BIGINT NOT NULL,
    PRIMARY KEY (scope, claimant),
    UNIQUE (scope, idx)
);
