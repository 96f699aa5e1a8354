//! [`Worker`]: claims queued runs and executes them durably.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowtrace_core::checkpoint::{CheckpointErrorKind, Checkpointer};
use flowtrace_core::exec::Command;
use flowtrace_core::exec::SummaryScope;
use flowtrace_core::ids::ThreadId;
use flowtrace_core::{Error, RunInput, RunStatus, TraceSink};
use flowtrace_workflow::compile::{CompiledWorkflow, Runtime, compile};
use flowtrace_workflow::limits::Limits;
use flowtrace_workflow::spec::{WorkflowSpec, load_with};
use flowtrace_workflow::summary::WorkflowSummary;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::claim::{self, Claim, Stopped};
use super::signal::{RemoteSignal, listen};
use super::{PendingInterrupt, RunState, Verdict};
use crate::bindings::apply_bindings;
use crate::checkpoint::PostgresCheckpointer;
use crate::error::{StoreError, StoreErrorKind};
use crate::lease::{self, Lease};
use crate::registry::WorkflowRegistry;

/// The most compiled workflows a worker keeps (by id and version).
pub const MAX_CACHED_WORKFLOWS: usize = 64;

/// The most times a run is claimed before a worker gives up on it (a run
/// whose worker keeps dying, or whose database keeps failing under it).
pub const MAX_CLAIMS: i32 = 20;

/// When [`Worker::run`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdlePolicy {
    /// Only when shut down.
    UntilShutdown,
    /// Also once no run is queued or running anywhere (runs waiting for a
    /// human do not count) and this worker holds none.
    ExitWhenIdle,
}

/// What a worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Runs claimed.
    pub claimed: u64,
    /// Runs that ended in each status (`succeeded`, `failed`, …), and
    /// `released` for runs given back to the queue, `lost` for runs
    /// another worker took over.
    pub by_outcome: std::collections::BTreeMap<String, u64>,
}

/// Claims queued runs and executes them: up to `concurrency` at a time,
/// each durably on its own thread with a fenced
/// [`PostgresCheckpointer`], its lease renewed by a heartbeat, halts and
/// cancels delivered by `LISTEN/NOTIFY`.
///
/// On shutdown it stops claiming, lets its runs finish for a grace period,
/// then cancels the rest and gives them back to the queue, where another
/// worker resumes them from their last checkpoints.
#[derive(Clone)]
#[must_use]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    id: String,
    runtime: Runtime,
    concurrency: usize,
    lease_ttl: Duration,
    poll: Duration,
    grace: Duration,
    sink: Option<Arc<dyn TraceSink>>,
    compiled: Mutex<HashMap<(String, i32, String), Arc<Loaded>>>,
    /// The runs held now: signal, claim, thread lease epoch.
    held: Mutex<HashMap<String, Held>>,
}

struct Held {
    signal: Arc<RemoteSignal>,
    claims: i32,
    thread: String,
    epoch: u64,
    /// Stopped by the worker itself (shutdown or a lost lease).
    stopped_by_worker: Arc<std::sync::atomic::AtomicBool>,
    lost: Arc<std::sync::atomic::AtomicBool>,
}

struct Loaded {
    spec: WorkflowSpec,
    compiled: CompiledWorkflow,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.id)
            .field("concurrency", &self.inner.concurrency)
            .finish()
    }
}

/// How a run ended, for the report.
enum Ended {
    Recorded(RunState),
    Released,
    Lost,
}

impl Worker {
    /// A worker over `pool` running workflows with the models and tools of
    /// `runtime`. Defaults: id `worker-<pid>`, 4 runs at a time, a 30 s
    /// lease (renewed every 10 s), polling every 1 s besides notifications,
    /// a 30 s shutdown grace, no trace sink.
    pub fn new(pool: PgPool, runtime: Runtime) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                id: format!("worker-{}", std::process::id()),
                runtime,
                concurrency: 4,
                lease_ttl: Duration::from_secs(30),
                poll: Duration::from_secs(1),
                grace: Duration::from_secs(30),
                sink: None,
                compiled: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            f(inner);
        }
        self
    }

    /// The worker's name (recorded as `claimed_by` and as lease owner):
    /// unique among live workers.
    pub fn id(self, id: impl Into<String>) -> Self {
        let id = id.into();
        self.edit(|i| i.id = id)
    }

    /// How many runs it executes at once (at least 1).
    pub fn concurrency(self, n: usize) -> Self {
        self.edit(|i| i.concurrency = n.max(1))
    }

    /// How long a claim lasts without a heartbeat (renewed every third of
    /// it). A dead worker's runs are claimable again after this long.
    pub fn lease_ttl(self, ttl: Duration) -> Self {
        self.edit(|i| i.lease_ttl = ttl.max(Duration::from_millis(30)))
    }

    /// How often it looks at the queue when no notification came.
    pub fn poll_interval(self, every: Duration) -> Self {
        self.edit(|i| i.poll = every.max(Duration::from_millis(10)))
    }

    /// How long a shutdown lets its runs finish before giving them back.
    pub fn shutdown_grace(self, grace: Duration) -> Self {
        self.edit(|i| i.grace = grace)
    }

    /// Sends every run's events to `sink` (for example a
    /// [`PostgresTraceSink`](crate::PostgresTraceSink)).
    pub fn sink(self, sink: Arc<dyn TraceSink>) -> Self {
        self.edit(|i| i.sink = Some(sink))
    }

    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.inner.id
    }

    /// Claims and executes runs until `shutdown` fires (or, with
    /// [`IdlePolicy::ExitWhenIdle`], until nothing is left to do).
    ///
    /// # Errors
    ///
    /// Only if the database is unreachable when it starts; later failures
    /// are logged and retried.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        idle: IdlePolicy,
    ) -> Result<WorkerReport, StoreError> {
        let inner = &self.inner;
        sqlx::query("select 1")
            .execute(&inner.pool)
            .await
            .map_err(StoreError::db("connecting the worker"))?;
        let stop_tasks = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let deliver = {
            let inner = inner.clone();
            move |what: &str, run_id: &str| inner.deliver(what, run_id)
        };
        let listener = tokio::spawn(listen(
            inner.pool.clone(),
            wake.clone(),
            deliver,
            stop_tasks.clone(),
        ));
        let heartbeat = tokio::spawn(inner.clone().heartbeats(stop_tasks.clone()));

        let mut report = WorkerReport::default();
        let mut running: JoinSet<Ended> = JoinSet::new();
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let free = inner.concurrency.saturating_sub(running.len());
            let mut claimed = 0;
            if free > 0 {
                match claim::claim(&inner.pool, &inner.id, free, inner.lease_ttl).await {
                    Ok(claims) => {
                        backoff = Duration::from_millis(100);
                        claimed = claims.len();
                        report.claimed += claims.len() as u64;
                        for c in claims {
                            running.spawn(inner.clone().execute(c));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = %inner.id, error = %e, "claiming failed; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            if idle == IdlePolicy::ExitWhenIdle && claimed == 0 && running.is_empty() {
                match claim::pending(&inner.pool).await {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => tracing::warn!(worker = %inner.id, error = %e, "checking the queue"),
                }
            }
            if claimed > 0 && running.len() < inner.concurrency {
                // There may be more.
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(inner.poll) => {}
                Some(done) = running.join_next(), if !running.is_empty() => {
                    count(&mut report, done);
                }
            }
        }

        // Shutdown: let the runs finish for the grace period, then stop
        // them and give them back.
        if !running.is_empty() {
            let deadline = tokio::time::sleep(inner.grace);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    done = running.join_next() => match done {
                        Some(done) => count(&mut report, done),
                        None => break,
                    },
                }
            }
            inner.stop_all();
            while let Some(done) = running.join_next().await {
                count(&mut report, done);
            }
        }
        stop_tasks.cancel();
        let _ = listener.await;
        let _ = heartbeat.await;
        Ok(report)
    }
}

fn count(report: &mut WorkerReport, done: Result<Ended, tokio::task::JoinError>) {
    let key = match done {
        Ok(Ended::Recorded(state)) => state.as_str(),
        Ok(Ended::Released) => "released",
        Ok(Ended::Lost) => "lost",
        Err(_) => "aborted",
    };
    *report.by_outcome.entry(key.to_owned()).or_default() += 1;
}

impl Inner {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request from another process for run `run_id`, if held here.
    fn deliver(&self, what: &str, run_id: &str) {
        if let Some(h) = self.held().get(run_id) {
            h.signal.apply(what);
        }
    }

    /// Cancels every held run as the worker's own doing (shutdown).
    fn stop_all(&self) {
        for h in self.held().values() {
            h.stopped_by_worker
                .store(true, std::sync::atomic::Ordering::Release);
            h.signal.token().cancel();
        }
    }

    /// Renews the held runs' leases every third of the TTL; stops the runs
    /// taken over; applies requests a notification may have missed.
    async fn heartbeats(self: Arc<Self>, stop: CancellationToken) {
        let every = self.lease_ttl / 3;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let held: Vec<(String, i32, String, u64)> = self
                .held()
                .iter()
                .map(|(id, h)| (id.clone(), h.claims, h.thread.clone(), h.epoch))
                .collect();
            if held.is_empty() {
                continue;
            }
            match claim::heartbeat(&self.pool, &self.id, &held, self.lease_ttl).await {
                Ok(beats) => {
                    let map = self.held();
                    for (id, h) in map.iter() {
                        match beats.iter().find(|b| &b.run_id == id) {
                            Some(b) => {
                                if let Some(what) = &b.requested {
                                    h.signal.apply(what);
                                }
                            }
                            None => {
                                // Taken over (or finished meanwhile, which
                                // the run's task knows better): stop it.
                                h.lost.store(true, std::sync::atomic::Ordering::Release);
                                h.stopped_by_worker
                                    .store(true, std::sync::atomic::Ordering::Release);
                                h.signal.token().cancel();
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "heartbeat failed; retrying");
                }
            }
        }
    }

    /// The compiled workflow `id` version `version` (cached). `Err(None)`
    /// when the database failed (try again later), `Err(Some(why))` when
    /// the workflow can't run.
    async fn load(&self, id: &str, version: i32) -> Result<Arc<Loaded>, Option<String>> {
        let registry = WorkflowRegistry::new(self.pool.clone());
        let bindings = registry.bindings(id).await.map_err(|e| {
            tracing::warn!(workflow = id, error = %e, "reading provider bindings");
            None
        })?;
        // Bindings change without a new version: they are part of the key.
        let fingerprint: String = bindings
            .iter()
            .map(|b| format!("{}={}@{:?};", b.provider, b.model, b.temperature))
            .collect();
        let key = (id.to_owned(), version, fingerprint);
        if let Some(l) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(l.clone());
        }
        // Deleted workflows still run the runs queued for them.
        let record = registry
            .get_archived(id, version)
            .await
            .map_err(|e| match e.kind() {
                StoreErrorKind::NotFound => Some(e.to_string()),
                _ => {
                    tracing::warn!(workflow = id, version, error = %e, "reading a workflow");
                    None
                }
            })?;
        let mut doc = record.graph_json;
        apply_bindings(&mut doc, &bindings);
        let text = doc.to_string();
        let spec =
            load_with(&text, &self.runtime.known(), &Limits::default()).map_err(|errors| {
                let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                Some(format!(
                    "workflow {id:?} version {version} is invalid: {}",
                    all.join("; ")
                ))
            })?;
        let compiled = compile(&spec, &self.runtime).map_err(|e| {
            Some(format!(
                "workflow {id:?} version {version} does not compile: {e}"
            ))
        })?;
        let loaded = Arc::new(Loaded { spec, compiled });
        let mut cache = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED_WORKFLOWS
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(key, loaded.clone());
        Ok(loaded)
    }

    /// Executes one claimed run to its next stop and records it.
    async fn execute(self: Arc<Self>, claim: Claim) -> Ended {
        let thread = ThreadId::new(claim.thread_id.as_str());
        let lease = match lease::acquire(&self.pool, &thread, &self.id, self.lease_ttl).await {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => {
                // Its thread is still someone else's (or the database
                // failed): give the run back for later.
                let _ = claim::release(&self.pool, &claim.run_id, &self.id, claim.claims).await;
                return Ended::Released;
            }
        };
        let signal = Arc::new(RemoteSignal::new());
        let stopped_by_worker = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.held().insert(
            claim.run_id.clone(),
            Held {
                signal: signal.clone(),
                claims: claim.claims,
                thread: claim.thread_id.clone(),
                epoch: lease.epoch,
                stopped_by_worker: stopped_by_worker.clone(),
                lost: lost.clone(),
            },
        );
        if let Some(what) = &claim.requested {
            signal.apply(what);
        }
        let ended = self
            .execute_held(&claim, &lease, &signal, &stopped_by_worker, &lost)
            .await;
        self.held().remove(&claim.run_id);
        let _ = lease::release(&self.pool, &lease).await;
        ended
    }

    async fn execute_held(
        &self,
        claim: &Claim,
        lease: &Lease,
        signal: &Arc<RemoteSignal>,
        stopped_by_worker: &std::sync::atomic::AtomicBool,
        lost: &std::sync::atomic::AtomicBool,
    ) -> Ended {
        use std::sync::atomic::Ordering;
        let loaded = match self.load(&claim.workflow_id, claim.workflow_version).await {
            Ok(l) => l,
            Err(None) => return self.release(claim).await,
            Err(Some(message)) => {
                let stopped = Stopped {
                    status: RunState::Failed,
                    summary: serde_json::json!({
                        "run_id": claim.run_id, "status": "failed",
                        "error": {"kind": "workflow", "message": message},
                    }),
                    interrupts: Value::Null,
                    error: Some(serde_json::json!({"kind": "workflow", "message": message})),
                };
                return self.record(claim, stopped).await;
            }
        };
        let store = PostgresCheckpointer::new(self.pool.clone()).fenced(lease.clone());
        let latest = match store.get(&lease.thread, None).await {
            Ok(latest) => latest,
            Err(e) => {
                tracing::warn!(run = %claim.run_id, error = %e, "reading the run's thread; releasing it");
                return self.release(claim).await;
            }
        };
        let input: RunInput<flowtrace_core::JsonState> = if !claim.decisions.is_empty() {
            RunInput::Decide(
                claim
                    .decisions
                    .iter()
                    .map(|d| match &d.verdict {
                        Verdict::Approve(payload) => {
                            Command::approve(d.interrupt.clone(), payload.clone()).by(d.by.clone())
                        }
                        Verdict::Reject => Command::reject(d.interrupt.clone()).by(d.by.clone()),
                    })
                    .collect(),
            )
        } else if latest.is_some() {
            RunInput::Resume
        } else {
            RunInput::Start(CompiledWorkflow::initial_state(claim.input.clone()))
        };
        let mut config = loaded
            .compiled
            .config()
            .run_id(claim.run_id.as_str())
            .checkpointer(Arc::new(store) as Arc<dyn Checkpointer>)
            .thread(lease.thread.clone())
            .summary_scope(SummaryScope::Thread)
            .halt_signal(signal.clone())
            .cancellation_token(signal.token().clone());
        if let Some(sink) = &self.sink {
            config = config.shared_sink(sink.clone());
        }
        let outcome = loaded.compiled.graph().invoke(input, config).await;

        if lost.load(Ordering::Acquire) {
            return Ended::Lost;
        }
        if stopped_by_worker.load(Ordering::Acquire) && !signal.cancel_requested() {
            return self.release(claim).await;
        }
        if let Err(failure) = &outcome
            && let Error::Checkpoint(e) = &failure.error
        {
            match e.kind() {
                // Fenced: another worker holds the thread now.
                CheckpointErrorKind::Conflict => return Ended::Lost,
                // The database failed under the run: try again later,
                // from the last checkpoint.
                CheckpointErrorKind::Backend | CheckpointErrorKind::Io
                    if claim.claims < MAX_CLAIMS =>
                {
                    tracing::warn!(run = %claim.run_id, error = %e, "the store failed under the run; releasing it");
                    return self.release(claim).await;
                }
                _ => {}
            }
        }
        let summary = WorkflowSummary::new(&loaded.spec, &outcome);
        let status = match summary.status {
            RunStatus::Succeeded => RunState::Succeeded,
            RunStatus::Interrupted => RunState::Interrupted,
            RunStatus::Halted => RunState::Halted,
            RunStatus::Canceled => RunState::Canceled,
            _ => RunState::Failed,
        };
        let interrupts: Vec<PendingInterrupt> = match &outcome {
            Ok(out) => out
                .interrupts
                .iter()
                .map(|i| PendingInterrupt {
                    id: i.id.clone(),
                    node: i.node.as_ref().to_owned(),
                    payload: i.payload.clone(),
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let summary_json = serde_json::to_value(&summary).unwrap_or(Value::Null);
        let error = summary_json.get("error").filter(|e| !e.is_null()).cloned();
        let stopped = Stopped {
            status,
            summary: summary_json,
            interrupts: serde_json::to_value(&interrupts).unwrap_or(Value::Null),
            error,
        };
        self.record(claim, stopped).await
    }

    /// Records how the run stopped, retrying while the database is down
    /// (for up to one lease: after that the run is someone else's anyway).
    async fn record(&self, claim: &Claim, stopped: Stopped) -> Ended {
        let give_up = tokio::time::Instant::now() + self.lease_ttl;
        let mut delay = Duration::from_millis(50);
        loop {
            match claim::finish(&self.pool, &claim.run_id, &self.id, claim.claims, &stopped).await {
                Ok(true) => return Ended::Recorded(stopped.status),
                Ok(false) => return Ended::Lost,
                Err(e) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(run = %claim.run_id, error = %e, "recording the run; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(_) => return Ended::Lost,
            }
        }
    }

    /// Gives the run back to the queue (retrying while the database is
    /// down, for up to one lease).
    async fn release(&self, claim: &Claim) -> Ended {
        let give_up = tokio::time::Instant::now() + self.lease_ttl;
        let mut delay = Duration::from_millis(50);
        loop {
            match claim::release(&self.pool, &claim.run_id, &self.id, claim.claims).await {
                Ok(true) => return Ended::Released,
                Ok(false) => return Ended::Lost,
                Err(_) if tokio::time::Instant::now() < give_up => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(_) => return Ended::Lost,
            }
        }
    }
}
