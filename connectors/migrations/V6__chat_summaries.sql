-- Chat summaries: after every `pipeline.summary.every` chat messages of a stream (in event order),
-- the summary of its latest ones. Never changed once written: a replay finds them present.
CREATE TABLE chat_summaries (
    stream_id        text             NOT NULL,
    seq              bigint           NOT NULL,
    first_ts         bigint           NOT NULL,
    last_ts          bigint           NOT NULL,
    messages         bigint           NOT NULL,
    key_phrases      jsonb            NOT NULL,
    representative   jsonb            NOT NULL,
    sentiment        double precision NOT NULL,
    sentiment_label  text             NOT NULL,
    category         text             NOT NULL,
    categories       jsonb            NOT NULL,
    top_emotes       jsonb            NOT NULL,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, seq)
);
