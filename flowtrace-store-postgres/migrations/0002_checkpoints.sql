-- FlowTrace checkpoints: one row per checkpoint, a summary row per thread,
-- and the pending writes of unfinished super-steps.
--
-- A step writes one small row (its state is usually a delta of what
-- changed; core writes a full snapshot now and then), and a resume reads
-- the last snapshot plus the short tail after it. Thread ids use the "C"
-- collation so the database sorts them as FlowTrace does (by bytes).

-- Per thread: what `list_threads` reports, and the fence: an append of
-- `seq` updates this row only where `latest_seq = seq - 1`.
create table checkpoint_threads (
    thread_id          text collate "C" primary key,
    latest_seq         bigint      not null,
    -- The oldest checkpoint kept (prune moves it forward; always a full state).
    oldest_seq         bigint      not null,
    status             text        not null,
    step               bigint      not null,
    created_at         timestamptz not null,
    updated_at         timestamptz not null,
    -- The thread's metadata: exactly as FlowTrace wrote it (json keeps the
    -- text), and as jsonb for filters.
    metadata_json      json        not null default '{}',
    metadata           jsonb       not null default '{}',
    forked_from_thread text,
    forked_from_seq    bigint
);
create index checkpoint_threads_status_idx on checkpoint_threads (status, thread_id);
create index checkpoint_threads_metadata_idx on checkpoint_threads using gin (metadata jsonb_path_ops);

-- One row per checkpoint. `body` is the checkpoint as FlowTrace encodes it
-- (compact JSON without its leading thread id, which `thread_id` holds).
create table checkpoints (
    thread_id  text collate "C" not null,
    seq        bigint      not null,
    parent_seq bigint,
    is_full    boolean     not null,
    created_at timestamptz not null,
    run_id     text        not null,
    body       bytea       not null,
    primary key (thread_id, seq)
);
-- The last full state at or before a seq: where a resume starts reading.
create index checkpoints_full_idx on checkpoints (thread_id, seq) where is_full;

-- Results of the tasks of the super-step after checkpoint `seq`, by task
-- position; a second write of a task keeps the first.
create table checkpoint_writes (
    thread_id text collate "C" not null,
    seq       bigint not null,
    task      bigint not null,
    node      text   not null,
    body      bytea  not null,
    primary key (thread_id, seq, task)
);
