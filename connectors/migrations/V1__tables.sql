-- DESIGN §4a tables, keyed by their natural keys. Times are epoch milliseconds as in every other
-- output (to_timestamp(window_start / 1000.0) shows one as a timestamptz). Each table has only
-- the indexes its queries need: every index costs the sink's writes.
-- `final` = the row can no longer change; `updated_at` = when crowdpulse last wrote it.

CREATE TABLE window_metrics (
    stream_id        text    NOT NULL,
    "window"         text    NOT NULL,
    window_start     bigint  NOT NULL,
    window_end       bigint  NOT NULL,
    chat_messages    bigint  NOT NULL,
    unique_chatters  bigint  NOT NULL,
    sentiment_mean   double precision,
    positive         bigint  NOT NULL,
    neutral          bigint  NOT NULL,
    negative         bigint  NOT NULL,
    reactions        bigint  NOT NULL,
    viewer_joins     bigint  NOT NULL,
    viewer_leaves    bigint  NOT NULL,
    viewers_peak     bigint  NOT NULL,
    viewers_end      bigint  NOT NULL,
    transactions     bigint  NOT NULL,
    final            boolean NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, "window", window_start)
);
-- Dashboards across streams ("every stream's 10s windows of the last hour").
CREATE INDEX window_metrics_by_time ON window_metrics ("window", window_start);

CREATE TABLE window_emojis (
    stream_id     text    NOT NULL,
    "window"      text    NOT NULL,
    window_start  bigint  NOT NULL,
    emoji         text    NOT NULL,
    window_end    bigint  NOT NULL,
    count         bigint  NOT NULL,
    final         boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, "window", window_start, emoji)
);

CREATE TABLE window_top_emojis (
    stream_id     text    NOT NULL,
    "window"      text    NOT NULL,
    window_start  bigint  NOT NULL,
    window_end    bigint  NOT NULL,
    -- [{"emoji": ..., "count": ...}] by count desc then emoji asc, ties at the k-th count included
    top           jsonb   NOT NULL,
    final         boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, "window", window_start)
);

CREATE TABLE window_revenue (
    stream_id     text    NOT NULL,
    "window"      text    NOT NULL,
    window_start  bigint  NOT NULL,
    kind          text    NOT NULL,
    currency      text    NOT NULL,
    window_end    bigint  NOT NULL,
    transactions  bigint  NOT NULL,
    -- exact: the sum in 1/10000 of the currency unit, and the same as a decimal
    amount_units  bigint  NOT NULL,
    amount        numeric GENERATED ALWAYS AS (amount_units::numeric / 10000) STORED,
    final         boolean NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, "window", window_start, kind, currency)
);

CREATE TABLE moments (
    stream_id          text    NOT NULL,
    metric             text    NOT NULL,
    start              bigint  NOT NULL,
    "end"              bigint  NOT NULL,
    peak_window_start  bigint  NOT NULL,
    peak_value         double precision NOT NULL,
    baseline_mean      double precision NOT NULL,
    baseline_std       double precision NOT NULL,
    zscore             double precision NOT NULL,
    final              boolean NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, metric, start)
);
CREATE INDEX moments_by_time ON moments (start);

CREATE TABLE stream_totals (
    stream_id      text    PRIMARY KEY,
    title          text,
    category       text,
    status         text,
    live_since     bigint,
    chat_messages  bigint  NOT NULL,
    reactions      bigint  NOT NULL,
    transactions   bigint  NOT NULL,
    peak_viewers   bigint  NOT NULL,
    final          boolean NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    source      text    NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint  NOT NULL,
    reason      text    NOT NULL,
    error       text    NOT NULL,
    payload     bytea   NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, partition, "offset")
);
CREATE INDEX dead_letters_by_time ON dead_letters (created_at);

-- Where each input partition stands, written in the same transaction as the rows it produced.
CREATE TABLE source_progress (
    source       text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    watermark    bigint,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, partition)
);

-- The frontier of the last committed flush: every change at an earlier time is in the tables.
-- NULL once a bounded run has written everything.
CREATE TABLE sink_frontier (
    sink        text PRIMARY KEY,
    frontier    bigint,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
