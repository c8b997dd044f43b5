-- Configured event kinds ([kinds.NAME]): each window's measures per dimension combination, and
-- the alerts their rules fired on final windows. `dims` and `measures` are objects keyed by the
-- kind's dimension and measure names.
CREATE TABLE custom_metrics (
    kind          text        NOT NULL,
    "window"      text        NOT NULL,
    window_start  bigint      NOT NULL,
    dims          jsonb       NOT NULL,
    window_end    bigint      NOT NULL,
    records       bigint      NOT NULL,
    measures      jsonb       NOT NULL,
    final         boolean     NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, "window", window_start, dims)
);
CREATE INDEX custom_metrics_by_start ON custom_metrics (kind, "window", window_start DESC);

-- Never changed once written (alerts are judged on final windows).
CREATE TABLE alerts (
    kind          text             NOT NULL,
    rule          text             NOT NULL,
    "window"      text             NOT NULL,
    window_start  bigint           NOT NULL,
    dims          jsonb            NOT NULL,
    window_end    bigint           NOT NULL,
    measure       text             NOT NULL,
    value         double precision NOT NULL,
    threshold     double precision,
    zscore        double precision,
    records       bigint           NOT NULL,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, rule, "window", window_start, dims)
);
CREATE INDEX alerts_by_start ON alerts (kind, window_start DESC);
