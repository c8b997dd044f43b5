-- Abstractive texts of chat summaries, written by `[summarizer]` outside the dataflow and keyed
-- like chat_summaries (by the last message a summary covers): a replay that makes a summary again
-- finds its text here and asks the endpoint nothing. Delete rows to have them asked again.
CREATE TABLE chat_summary_texts (
    stream_id        text        NOT NULL,
    last_ts          bigint      NOT NULL,
    last_source      text        NOT NULL,
    last_partition   integer     NOT NULL,
    last_offset      bigint      NOT NULL,
    text             text        NOT NULL,
    model            text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, last_ts, last_source, last_partition, last_offset)
);
