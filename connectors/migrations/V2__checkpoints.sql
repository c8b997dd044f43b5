-- Consistent checkpoints (DESIGN §5): written in the transaction of the flush that completes
-- them, so a checkpoint at T is never visible without every output change up to T.
CREATE TABLE checkpoints (
    time            bigint  PRIMARY KEY,
    workers         integer NOT NULL,
    format_version  integer NOT NULL,
    state_bytes     bigint  NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Each worker's source and analytics state at the checkpoint time (bincode, format version first).
CREATE TABLE checkpoint_parts (
    time    bigint  NOT NULL REFERENCES checkpoints (time) ON DELETE CASCADE,
    worker  integer NOT NULL,
    role    text    NOT NULL,
    state   bytea   NOT NULL,
    PRIMARY KEY (time, worker, role)
);

-- Where each partition stood at the checkpoint time: a restart reads on from next_offset.
CREATE TABLE checkpoint_positions (
    time         bigint  NOT NULL REFERENCES checkpoints (time) ON DELETE CASCADE,
    source       text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    watermark    bigint,
    PRIMARY KEY (time, source, partition)
);
