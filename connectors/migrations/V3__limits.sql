-- Window sums of money are 128-bit in the dataflow (a window can hold any number of the largest
-- accepted amount), so the stored sum is an exact numeric rather than a bigint.
ALTER TABLE window_revenue DROP COLUMN amount;
ALTER TABLE window_revenue ALTER COLUMN amount_units TYPE numeric;
-- Multiplying keeps the result's scale at exactly 4 (a division rounds to 16 significant digits).
ALTER TABLE window_revenue
    ADD COLUMN amount numeric GENERATED ALWAYS AS (amount_units * 0.0001) STORED;

-- A top-emoji list is cut after pipeline.top_max_entries (ties included); the row says so.
ALTER TABLE window_top_emojis ADD COLUMN truncated boolean NOT NULL DEFAULT false;
