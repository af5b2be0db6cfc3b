-- Each sale line's exact points (decimal strings, in line order), so a return of some lines
-- claws back the share those lines earned: an excluded line earned nothing, a doubled one
-- twice its value's share. NULL for sales without lines, and for sales recorded before this
-- column: their returns claw back by value, as before.
ALTER TABLE sales ADD COLUMN line_points jsonb;
