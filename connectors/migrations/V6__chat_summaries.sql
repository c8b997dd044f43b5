-- Chat summaries: after every `pipeline.summary.every` chat messages of a stream (in event order),
-- the summary of its latest ones, identified by the last message it covers (time, source,
-- partition, offset), which a replay or a run started elsewhere in the input summarizes again
-- at the same message; `seq` counts from where reading began. Never changed once written.
-- Kept until dropped: unlike chat_messages, no retention applies.
CREATE TABLE chat_summaries (
    stream_id        text             NOT NULL,
    seq              bigint           NOT NULL,
    first_ts         bigint           NOT NULL,
    last_ts          bigint           NOT NULL,
    last_source      text             NOT NULL,
    last_partition   integer          NOT NULL,
    last_offset      bigint           NOT NULL,
    messages         bigint           NOT NULL,
    key_phrases      jsonb            NOT NULL,
    representative   jsonb            NOT NULL,
    sentiment        double precision NOT NULL,
    sentiment_label  text             NOT NULL,
    category         text             NOT NULL,
    categories       jsonb            NOT NULL,
    top_emotes       jsonb            NOT NULL,
    created_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, last_ts, last_source, last_partition, last_offset)
);
