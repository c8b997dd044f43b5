-- Message categories per window (one per chat message, so they add up to chat_messages). Rows
-- written before this migration had none counted: they read 0.
ALTER TABLE window_metrics
    ADD COLUMN praise   bigint NOT NULL DEFAULT 0,
    ADD COLUMN toxic    bigint NOT NULL DEFAULT 0,
    ADD COLUMN humor    bigint NOT NULL DEFAULT 0,
    ADD COLUMN question bigint NOT NULL DEFAULT 0,
    ADD COLUMN other    bigint NOT NULL DEFAULT 0;
