-- FlowTrace: workflows, runs, steps, trace events, provider bindings, and the
-- leases that give each thread (and so each queued run) one owner at a time.
-- Ids are text: FlowTrace's run and thread ids are strings.

create table workflows (
    id          text        not null,
    version     integer     not null check (version >= 1),
    owner_id    text,
    name        text        not null,
    description text,
    graph_json  jsonb       not null,
    -- sha-256 of the canonical JSON, to register a workflow by content once.
    content_hash text       not null,
    deleted     boolean     not null default false,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (id, version)
);
create index workflows_owner_idx on workflows (owner_id);
create index workflows_hash_idx on workflows (content_hash);

create table workflow_runs (
    id                  text        primary key,
    workflow_id         text,
    workflow_version    integer,
    thread_id           text,
    triggered_by        text,
    status              text        not null
        check (status in ('queued', 'running', 'succeeded', 'failed', 'canceled', 'interrupted', 'halted')),
    -- The run's input (queued runs).
    input               jsonb,
    enqueued_at         timestamptz not null default now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    total_tokens_input  bigint      not null default 0,
    total_tokens_output bigint      not null default 0,
    total_cost          numeric(40, 12) not null default 0,
    total_latency_ms    bigint      not null default 0,
    error_summary       jsonb,
    -- The run summary FlowTrace reported when the run stopped.
    summary             jsonb,
    -- Queue: who runs it now, until when, and what it has been asked.
    claimed_by          text,
    lease_expires_at    timestamptz,
    claims              integer     not null default 0,
    -- 'halt', 'cancel' or 'resume', cleared when a worker acts on it.
    requested           text check (requested in ('halt', 'cancel', 'resume')),
    -- The questions an interrupted run waits on: [{id, node, payload}].
    interrupts          jsonb,
    -- Decisions for an interrupted run, waiting for a worker:
    -- [{interrupt, approve: payload} | {interrupt, reject: true}, by].
    decisions           jsonb,
    updated_at          timestamptz not null default now(),
    foreign key (workflow_id, workflow_version) references workflows (id, version)
);
create index workflow_runs_workflow_idx on workflow_runs (workflow_id);
create index workflow_runs_thread_idx on workflow_runs (thread_id);
-- Claimable runs, oldest first.
create index workflow_runs_queue_idx on workflow_runs (enqueued_at)
    where status in ('queued', 'running');
create index workflow_runs_finished_idx on workflow_runs (finished_at)
    where finished_at is not null;

create table run_steps (
    id            bigserial   primary key,
    run_id        text        not null,
    -- FlowTrace's step id: steps are numbered from 1 within a run.
    step_id       bigint      not null,
    node_id       text        not null,
    node_type     text,
    status        text        not null,
    attempt       integer     not null,
    started_at    timestamptz,
    finished_at   timestamptz,
    latency_ms    double precision,
    tokens_input  bigint      not null default 0,
    tokens_output bigint      not null default 0,
    cost          numeric(40, 12) not null default 0,
    cache_hit     boolean     not null default false,
    provider      text,
    model         text,
    error         text,
    unique (run_id, step_id)
);

create table trace_events (
    id      bigserial   primary key,
    run_id  text        not null,
    -- The event's number within its run, from 0, in emission order.
    seq     bigint      not null,
    step_id bigint,
    ts      timestamptz not null,
    kind    text        not null,
    payload jsonb       not null,
    unique (run_id, seq)
);

create table provider_bindings (
    id          bigserial   primary key,
    owner_id    text,
    workflow_id text,
    provider    text        not null,
    model       text        not null,
    temperature double precision
);
-- One binding per workflow and provider.
create unique index provider_bindings_workflow_idx on provider_bindings (workflow_id, provider);

-- One owner per thread at a time. `epoch` grows on every takeover, and a
-- writer's checkpoint is accepted only under the epoch it holds.
create table thread_leases (
    thread_id  text        primary key,
    owner      text        not null,
    epoch      bigint      not null,
    expires_at timestamptz not null
);
