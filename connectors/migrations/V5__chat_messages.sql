-- The chat history: every accepted chat message with its sentiment and category, where it was
-- read (source, partition, offset: its identity, so a replay or a restart writes nothing twice).
-- Range-partitioned by event time, one partition per UTC day (`chat_messages_YYYYMMDD`), which the
-- sink creates as rows need them and drops past `postgres.chat_retention`: expiry is a DROP, not
-- a DELETE that bloats the table.
CREATE TABLE chat_messages (
    source      text             NOT NULL,
    partition   integer          NOT NULL,
    "offset"    bigint           NOT NULL,
    ts          bigint           NOT NULL,
    stream_id   text             NOT NULL,
    user_id     text             NOT NULL,
    text        text             NOT NULL,
    sentiment   double precision NOT NULL,
    category    text             NOT NULL,
    created_at  timestamptz      NOT NULL DEFAULT now(),
    -- The partition key must be part of a partitioned table's key.
    PRIMARY KEY (source, partition, "offset", ts)
) PARTITION BY RANGE (ts);
-- A stream's messages by time (the API pages through them newest first).
CREATE INDEX chat_messages_by_stream ON chat_messages (stream_id, ts);
-- Word search (`?q=`): the 'simple' configuration keeps every word as written (lowercased), so
-- chat slang and emote names are found as typed.
CREATE INDEX chat_messages_text ON chat_messages USING gin (to_tsvector('simple', text));
