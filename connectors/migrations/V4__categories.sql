-- Message categories per window (one per chat message, so they add up to chat_messages). Rows
-- written before this migration were not counted: null, not a false 0 (final rows are never
-- rewritten, so a replay does not fill them in).
ALTER TABLE window_metrics
    ADD COLUMN praise   bigint,
    ADD COLUMN toxic    bigint,
    ADD COLUMN humor    bigint,
    ADD COLUMN question bigint,
    ADD COLUMN other    bigint;
