-- Log partitions months ahead, a default partition that never blocks their creation,
-- and retention by whole partitions.

DROP FUNCTION perpetuo_ensure_log_partitions(timestamptz);

-- Creates the monthly partitions from the month of `at` through `months_ahead` months
-- after it, where missing. Rows that already sit in the default partition for a month
-- being created are moved into the new partition in the same transaction, so creation
-- never fails on them. Idempotent; concurrent callers queue on an advisory lock.
CREATE FUNCTION perpetuo_ensure_log_partitions(at timestamptz, months_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz;
    month_end   timestamptz;
    part_name   text;
    created     integer := 0;
    i           integer;
BEGIN
    PERFORM pg_advisory_xact_lock(7311001);
    FOR i IN 0..greatest(months_ahead, 0) LOOP
        month_start := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + make_interval(months => i);
        month_end := month_start + interval '1 month';
        part_name := format('request_logs_y%sm%s',
                            to_char(month_start AT TIME ZONE 'UTC', 'YYYY'),
                            to_char(month_start AT TIME ZONE 'UTC', 'MM'));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE request_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part_name);
            EXECUTE format('WITH moved AS (DELETE FROM request_logs_default WHERE created_at >= %L AND created_at < %L RETURNING *)
                            INSERT INTO %I SELECT * FROM moved', month_start, month_end, part_name);
            EXECUTE format('ALTER TABLE request_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, month_end);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- Drops the monthly partitions that end at or before `cutoff` and deletes older rows
-- from the default partition; usage counters are left alone. Returns the dropped names.
CREATE FUNCTION perpetuo_drop_log_partitions(cutoff timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part        record;
    month_start timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(7311001);
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'request_logs'::regclass
          AND c.relname ~ '^request_logs_y[0-9]{4}m[0-9]{2}$'
        ORDER BY c.relname
    LOOP
        month_start := make_timestamptz(substr(part.relname, 15, 4)::integer,
                                        substr(part.relname, 20, 2)::integer, 1, 0, 0, 0, 'UTC');
        IF month_start + interval '1 month' <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
    DELETE FROM request_logs_default WHERE created_at < cutoff;
END;
$$;

SELECT perpetuo_ensure_log_partitions(now());
