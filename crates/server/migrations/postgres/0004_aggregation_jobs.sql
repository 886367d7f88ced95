-- Aggregation in jobs (SPEC §19.4): the leader sends a day's reports to the
-- helper in jobs of at most `job_size` reports, then asks it to collect the
-- day. Each attempt at a day is a run with a random id; a new run replaces
-- the helper's uncollected records of the day, and a day is collected once.

-- Leader: reports of a day read in pages, in report id order.
CREATE INDEX reports_by_day_id ON reports (day, report_id);
DROP INDEX reports_by_day;

-- Leader: the collect it is about to send for a day, with its own aggregate
-- share (noised once, if dp_epsilon). Kept until the day's counts are
-- recorded, so a leader that stops between the helper's answer and its own
-- record sends the same collect again and gets the same answer. While it
-- exists, no report is stored for the day.
CREATE TABLE leader_collects (
    day          BIGINT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    jobs         BIGINT NOT NULL,
    reports      BIGINT NOT NULL,
    invalid      BIGINT NOT NULL,
    leader_share TEXT NOT NULL,
    dp_epsilon   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

-- Helper: each day's current run and, once collected, what closed it and
-- the answer given (sent again, same noise, for the same collect).
CREATE TABLE helper_days (
    day          BIGINT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    collect_key  TEXT,
    response     TEXT,
    updated_at   BIGINT NOT NULL
);
-- Helper: runs replaced by a newer run of their day; their jobs are refused.
CREATE TABLE helper_dropped_runs (
    day          BIGINT NOT NULL,
    run_id       TEXT NOT NULL,
    PRIMARY KEY (day, run_id)
);
-- Helper: the jobs of each uncollected run: the digest of their report ids,
-- the count and sum of the valid output shares (never noised), and the
-- verdicts given (the same answer to a retried job). Deleted when the day
-- is collected or the run replaced.
CREATE TABLE helper_jobs (
    day          BIGINT NOT NULL,
    run_id       TEXT NOT NULL,
    job          BIGINT NOT NULL,
    ids_digest   TEXT NOT NULL,
    reports      BIGINT NOT NULL,
    share        TEXT NOT NULL,
    response     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (day, run_id, job)
);
-- Helper: every report id in a job of an uncollected run, so none is in
-- two jobs of a run; `counted` when it is added to the job's share. When
-- the day is collected they move to helper_seen.
CREATE TABLE helper_job_reports (
    day          BIGINT NOT NULL,
    run_id       TEXT NOT NULL,
    report_id    BYTEA NOT NULL,
    counted      BIGINT NOT NULL,
    PRIMARY KEY (day, run_id, report_id)
);
-- Days the helper aggregated in one request (before jobs) stay closed.
INSERT INTO helper_days (day, run_id, collect_key, response, updated_at)
    SELECT day, '', ids_digest, response, created_at FROM helper_batches;
DROP TABLE helper_batches;
