-- Backend-defined records (payment-backend state that commits with the order change) and
-- derivation-index reservations (one address per payment request, never shared).
CREATE TABLE records (
    collection  TEXT COLLATE "C" NOT NULL,
    record_key  TEXT COLLATE "C" NOT NULL,
    version     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (collection, record_key)
);

CREATE TABLE index_counters (
    scope       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    next_idx    BIGINT NOT NULL
);

CREATE TABLE index_reservations (
    scope       TEXT COLLATE "C" NOT NULL,
    claimant    TEXT COLLATE "C" NOT NULL,
    idx         BIGINT NOT NULL,
    reserved_at BIGINT NOT NULL,
    PRIMARY KEY (scope, claimant),
    UNIQUE (scope, idx)
);
