-- When the period-closed event of a closed period was published (NULL: not yet). A close that committed but
-- crashed before publishing is announced again on the next run; one that recorded this never is.
ALTER TABLE closed_periods ADD COLUMN announced_at timestamptz;
