//! Flows as data, and the worker that drives them durably.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use klb_agent_client::agents::AgentError;
use klb_cloud::CloudError;

use crate::FlowError;
use crate::db::{Db, Progress, RunRecord, RunState, StepLog, now_ms};

/// How a step attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepErrorKind {
    /// Transient: retry with backoff, up to the attempt budget, then revert.
    Retry,
    /// Permanent: revert now.
    Fatal,
    /// Not ready yet (e.g. a VM still building): run the step again after its poll interval,
    /// up to its poll budget. Does not count as a failed attempt.
    Pending,
}

/// A failed step attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// What the engine does next.
    pub kind: StepErrorKind,
    /// Why (recorded in `flow_steps` and the run's reason).
    pub message: String,
}

impl StepError {
    /// A transient failure: try again after a backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Retry,
            message: message.into(),
        }
    }

    /// A permanent failure: revert the run.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Fatal,
            message: message.into(),
        }
    }

    /// Not done yet (polling): call `execute` again after the poll interval.
    pub fn pending(message: impl Into<String>) -> Self {
        Self {
            kind: StepErrorKind::Pending,
            message: message.into(),
        }
    }
}

impl From<CloudError> for StepError {
    fn from(e: CloudError) -> Self {
        if e.retryable {
            StepError::retry(e.to_string())
        } else {
            StepError::fatal(e.to_string())
        }
    }
}

/// An agent call fails a step the way a cloud call does: retried when the agent may answer
/// later.
impl From<AgentError> for StepError {
    fn from(e: AgentError) -> Self {
        if e.retryable {
            StepError::retry(e.to_string())
        } else {
            StepError::fatal(e.to_string())
        }
    }
}

/// What a step sees: the shared environment, the run's input and its durable variables.
pub struct StepCtx<'a, E> {
    /// Shared dependencies (cloud handles, config, store access).
    pub env: &'a E,
    /// The run's id.
    pub run_id: &'a str,
    /// The serialization key (load balancer id).
    pub key: &'a str,
    /// The run's input.
    pub input: &'a Value,
    /// Durable variables; committed with the step's progress, also after a failed attempt.
    pub vars: &'a mut Map<String, Value>,
    /// 0-based attempt of this step (retries and polls).
    pub attempt: u32,
}

impl<E> StepCtx<'_, E> {
    /// The run input as a typed value.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_value(self.input.clone())
            .map_err(|e| StepError::fatal(format!("bad flow input: {e}")))
    }

    /// A recorded variable (`None` when unset or not of the variable's type).
    pub fn var<T: DeserializeOwned>(&self, var: Var<T>) -> Option<T> {
        self.vars
            .get(var.name)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// A variable an earlier step must have recorded: a fatal step error when it is missing.
    pub fn require<T: DeserializeOwned>(&self, var: Var<T>) -> Result<T, StepError> {
        self.var(var)
            .ok_or_else(|| StepError::fatal(format!("variable {} missing (step order?)", var.name)))
    }

    /// Record a variable (e.g. a cloud id) so later steps, reverts and takeovers see it.
    pub fn set_var<T: Serialize>(&mut self, var: Var<T>, value: &T) {
        if let Ok(v) = serde_json::to_value(value) {
            self.vars.insert(var.name.to_string(), v);
        }
    }

    /// Forget a variable.
    pub fn remove_var<T>(&mut self, var: Var<T>) {
        self.vars.remove(var.name);
    }
}

/// A run variable: its name in the run record and the type stored under it. A flow family
/// declares its variables once as constants, so every step that writes or reads one agrees on
/// both (a misspelt name or another type cannot compile).
pub struct Var<T> {
    name: &'static str,
    ty: PhantomData<fn() -> T>,
}

impl<T> Var<T> {
    /// The variable stored under `name`.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            ty: PhantomData,
        }
    }

    /// Its name in the run record (`RunRecord::vars`).
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

// Manual impls: derives would require `T: Clone`/`T: Copy`.
impl<T> Clone for Var<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Var<T> {}
impl<T> fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Var({})", self.name)
    }
}

/// One idempotent unit of a flow.
///
/// Invariants every step keeps (the engine's crash safety rests on them):
/// - `execute` may run again after it partly or fully ran (crash, lost lease, timeout): it
///   looks up what it may have made by deterministic name before creating.
/// - `revert` may run whether `execute` ran fully, partly or not at all, and more than once.
#[async_trait]
pub trait Step<E: Send + Sync>: Send + Sync {
    /// Stable name (recorded per attempt; renaming a step breaks resumption of old runs).
    fn name(&self) -> &'static str;
    /// Do the step's work (idempotent, see above).
    async fn execute(&self, ctx: &mut StepCtx<'_, E>) -> Result<(), StepError>;
    /// Undo the step's work (idempotent, see above); the default does nothing.
    async fn revert(&self, _ctx: &mut StepCtx<'_, E>) -> Result<(), StepError> {
        Ok(())
    }
    /// Per-attempt timeout; `None` uses the engine's default.
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// Delay between polls when `execute` answers [`StepErrorKind::Pending`].
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(500)
    }
    /// How many pending polls before the step counts as failed.
    fn max_polls(&self) -> u32 {
        1200
    }
}

/// A named, ordered list of steps.
pub struct Flow<E> {
    /// Flow kind (the engine looks flows up by it).
    pub kind: &'static str,
    /// Steps in execution order (revert runs them backwards).
    pub steps: Vec<Arc<dyn Step<E>>>,
}

impl<E: Send + Sync> Flow<E> {
    /// An empty flow of this kind.
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            steps: Vec::new(),
        }
    }

    /// Append a step.
    pub fn step(mut self, step: impl Step<E> + 'static) -> Self {
        self.steps.push(Arc::new(step));
        self
    }

    /// Step names in order.
    pub fn step_names(&self) -> Vec<&'static str> {
        self.steps.iter().map(|s| s.name()).collect()
    }
}

impl<E> fmt::Debug for Flow<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("kind", &self.kind)
            .field("steps", &self.steps.len())
            .finish()
    }
}

/// Called once a run is final (completed or failed-and-reverted), before its key is freed.
/// Must be idempotent: after a crash it runs again. This is where the store's job is settled
/// and the load balancer's `provisioning_status` set.
#[async_trait]
pub trait FinishHook<E>: Send + Sync {
    /// Called once the run is `Completed` or `Failed` (again after a crash).
    async fn finished(&self, env: &E, run: &RunRecord) -> Result<(), FlowError>;
}

/// Engine tuning.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim lasts without renewal; a dead worker's runs are taken over after it.
    pub lease_ttl: Duration,
    /// Default per-attempt step timeout.
    pub step_timeout: Duration,
    /// Attempts per step before the run reverts.
    pub max_attempts: u32,
    /// Attempts per revert step before giving up on it (the reason records what is left).
    pub max_revert_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
    /// How often idle workers look for claimable runs (submits in this process wake them now).
    pub poll_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(30),
            step_timeout: Duration::from_secs(120),
            max_attempts: 5,
            max_revert_attempts: 8,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
        }
    }
}

impl EngineConfig {
    /// Short timeouts for tests: fast takeover and fast hang detection.
    pub fn for_tests() -> Self {
        Self {
            lease_ttl: Duration::from_millis(400),
            step_timeout: Duration::from_millis(300),
            max_attempts: 4,
            max_revert_attempts: 6,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(10),
            poll_interval: Duration::from_millis(20),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// A run to submit.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Flow kind, e.g. `create_lb`.
    pub kind: String,
    /// Serialization key (the load balancer id).
    pub key: String,
    /// The flow's input.
    pub input: Value,
    /// Ask earlier active runs of the key to stop at their next step boundary and revert
    /// (a delete cancels a running create).
    pub cancel_previous: bool,
    /// Opaque reference for the finish hook (e.g. the store's job id).
    pub external_ref: Option<String>,
}

impl RunRequest {
    /// A run of `kind` serialized on `key` with `input` encoded as JSON.
    pub fn new(kind: &str, key: &str, input: impl Serialize) -> Result<Self, FlowError> {
        Ok(Self {
            kind: kind.to_string(),
            key: key.to_string(),
            input: serde_json::to_value(input).map_err(FlowError::Encode)?,
            cancel_previous: false,
            external_ref: None,
        })
    }
}

struct Inner<E> {
    db: Db,
    env: Arc<E>,
    flows: HashMap<&'static str, Arc<Flow<E>>>,
    hook: Option<Arc<dyn FinishHook<E>>>,
    config: EngineConfig,
    wake: Notify,
}

/// The flow engine: a registry of flows over one database. Cheap to clone.
pub struct Engine<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Engine<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E: Send + Sync + 'static> Engine<E> {
    /// An engine over `db` (already migrated) running `flows` with `env`.
    pub fn new(db: Db, env: Arc<E>, flows: Vec<Flow<E>>, config: EngineConfig) -> Self {
        let flows = flows.into_iter().map(|f| (f.kind, Arc::new(f))).collect();
        Self {
            inner: Arc::new(Inner {
                db,
                env,
                flows,
                hook: None,
                config,
                wake: Notify::new(),
            }),
        }
    }

    /// Set the finish hook (before cloning the engine or starting workers).
    pub fn with_finish_hook(mut self, hook: Arc<dyn FinishHook<E>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.hook = Some(hook);
        }
        self
    }

    /// The runs' database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The environment steps see.
    pub fn env(&self) -> &Arc<E> {
        &self.inner.env
    }

    /// The engine's tuning.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Queue a run; returns its id. Workers in this process are woken at once.
    pub async fn submit(&self, req: RunRequest) -> Result<String, FlowError> {
        if !self.inner.flows.contains_key(req.kind.as_str()) {
            return Err(FlowError::UnknownFlow(req.kind));
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.inner
            .db
            .insert_run(
                &id,
                &req.kind,
                &req.key,
                &req.input,
                req.external_ref.as_deref(),
                req.cancel_previous,
            )
            .await?;
        self.inner.wake.notify_waiters();
        Ok(id)
    }

    /// Wait until a run is final and settled (polling the store), or `timeout` passes.
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Result<RunRecord, FlowError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.inner.db.run(run_id).await? {
                Some(r) if r.state.is_final() && r.settled => return Ok(r),
                Some(_) => {}
                None => return Err(FlowError::NoSuchRun(run_id.to_string())),
            }
            if Instant::now() >= deadline {
                return Err(FlowError::WaitTimeout(run_id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A worker with a unique id that runs up to `concurrency` runs at once.
    pub fn worker(&self, concurrency: usize) -> Worker<E> {
        Worker {
            engine: self.clone(),
            id: format!("worker-{}", uuid::Uuid::new_v4()),
            concurrency: concurrency.max(1),
        }
    }
}

/// A long-running loop that claims runs and drives them. Dropping or aborting its future at
/// any point is safe: the leases it held expire and another worker resumes the runs from
/// their last committed step.
pub struct Worker<E> {
    engine: Engine<E>,
    id: String,
    concurrency: usize,
}

/// Why a worker stopped driving a run before it was final.
enum Abandon {
    /// Another worker holds the lease now (ours expired).
    LeaseLost,
    /// A database error; the lease will expire and someone retries.
    Db(FlowError),
}

impl From<FlowError> for Abandon {
    fn from(e: FlowError) -> Self {
        Abandon::Db(e)
    }
}

impl<E: Send + Sync + 'static> Worker<E> {
    /// This worker's id (the lease holder recorded on claimed runs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claim and drive runs until `shutdown` resolves. On shutdown, in-flight runs are dropped
    /// mid-step (like a crash) and their leases released so another node resumes them at once.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), FlowError> {
        let inner = self.engine.inner.clone();
        let mut tasks: JoinSet<()> = JoinSet::new();
        tokio::pin!(shutdown);
        info!(worker = %self.id, concurrency = self.concurrency, "flow worker started");
        loop {
            while tasks.try_join_next().is_some() {}
            // Register for wake-ups before looking, so a submit between the claim and the
            // wait is not missed.
            let woken = inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if tasks.len() < self.concurrency {
                // A token per claim, not per worker: if this worker re-claims a run whose
                // lease expired while an older task of its own still drives it, the older
                // task's next write fails instead of both driving the run.
                let token = format!("{}/{}", self.id, uuid::Uuid::new_v4().simple());
                match inner.db.claim(&token, inner.config.lease_ttl).await {
                    Ok(Some(run)) => {
                        let engine = self.engine.clone();
                        let worker = token;
                        let span =
                            info_span!("flow", run = %run.id, kind = %run.kind, lb = %run.key);
                        tasks.spawn(
                            async move {
                                drive(engine, worker, run).await;
                            }
                            .instrument(span),
                        );
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => warn!(worker = %self.id, error = %e, "claiming a flow run failed"),
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = &mut woken => {}
                _ = tokio::time::sleep(inner.config.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        inner.db.release_all(&self.id).await?;
        info!(worker = %self.id, "flow worker stopped");
        Ok(())
    }
}

/// Drive one claimed run until it is final and settled, or we lose it.
async fn drive<E: Send + Sync + 'static>(engine: Engine<E>, worker: String, run: RunRecord) {
    let inner = engine.inner.clone();
    let run_id = run.id.clone();
    match drive_inner(&engine, &worker, run).await {
        Ok(()) => {}
        Err(Abandon::LeaseLost) => warn!(run = %run_id, "lease lost; another worker continues"),
        Err(Abandon::Db(e)) => {
            warn!(run = %run_id, error = %e, "store error; releasing the run");
            let retry_at = now_ms() + inner.config.backoff_max.as_millis() as i64;
            let _ = inner.db.release(&run_id, &worker, retry_at).await;
        }
    }
    // A finished run frees its key: wake workers for the next run of the same LB.
    inner.wake.notify_waiters();
}

async fn drive_inner<E: Send + Sync + 'static>(
    engine: &Engine<E>,
    worker: &str,
    mut run: RunRecord,
) -> Result<(), Abandon> {
    let inner = &engine.inner;
    let cfg = &inner.config;
    let Some(flow) = inner.flows.get(run.kind.as_str()).cloned() else {
        // A run of a flow this binary does not know (newer node?): fail it cleanly.
        let reason = format!("unknown flow kind {:?}", run.kind);
        let p = Progress {
            state: RunState::Failed,
            step: -1,
            attempt: 0,
            vars: &run.vars,
            reason: Some(&reason),
            log: None,
        };
        inner
            .db
            .commit(&run.id, worker, cfg.lease_ttl, &p)
            .await?
            .ok_or(Abandon::LeaseLost)?;
        run.state = RunState::Failed;
        run.reason = Some(reason);
        return settle(engine, worker, run).await;
    };
    let n_steps = flow.steps.len() as i64;
    let mut cancel = run.cancel_requested;
    loop {
        match run.state {
            RunState::Completed | RunState::Failed => return settle(engine, worker, run).await,
            RunState::Pending | RunState::Running => {
                if cancel {
                    info!(step = run.step, "cancelled by a later run; reverting");
                    run.state = RunState::Reverting;
                    run.step = run.step.min(n_steps - 1);
                    run.attempt = 0;
                    run.reason = Some("cancelled by a later request".into());
                    cancel = commit(engine, worker, &run, None).await?;
                    continue;
                }
                if run.step >= n_steps {
                    run.state = RunState::Completed;
                    run.reason = None;
                    commit(engine, worker, &run, None).await?;
                    continue;
                }
                let step = flow.steps[run.step as usize].clone();
                let started = now_ms();
                let (result, c) =
                    attempt_step(engine, worker, &mut run, &*step, Phase::Execute).await?;
                cancel |= c;
                let name = step.name();
                match result {
                    Ok(()) => {
                        debug!(step = name, "step done");
                        let log = log(run.step, name, "execute", run.attempt, "ok", None, started);
                        run.step += 1;
                        run.attempt = 0;
                        cancel |= commit(engine, worker, &run, Some(log)).await?;
                    }
                    Err(e) if e.kind == StepErrorKind::Pending => {
                        let polls = run.attempt + 1;
                        if polls as u32 >= step.max_polls() {
                            let reason = format!("step {name} did not become ready: {}", e.message);
                            start_revert(engine, worker, &mut run, name, reason, started).await?;
                        } else {
                            let l = log(
                                run.step,
                                name,
                                "execute",
                                run.attempt,
                                "pending",
                                Some(&e.message),
                                started,
                            );
                            run.attempt = polls;
                            cancel |= commit(engine, worker, &run, Some(l)).await?;
                            sleep_renewing(engine, worker, &run.id, step.poll_interval()).await?;
                        }
                    }
                    Err(e) => {
                        let attempts = run.attempt + 1;
                        if e.kind == StepErrorKind::Fatal || attempts as u32 >= cfg.max_attempts {
                            let reason = format!("step {name} failed: {}", e.message);
                            warn!(step = name, attempts, error = %e.message, "step failed; reverting");
                            start_revert(engine, worker, &mut run, name, reason, started).await?;
                        } else {
                            debug!(step = name, attempts, error = %e.message, "step attempt failed; retrying");
                            let l = log(
                                run.step,
                                name,
                                "execute",
                                run.attempt,
                                "error",
                                Some(&e.message),
                                started,
                            );
                            run.attempt = attempts;
                            cancel |= commit(engine, worker, &run, Some(l)).await?;
                            sleep_renewing(engine, worker, &run.id, cfg.backoff(attempts as u32))
                                .await?;
                        }
                    }
                }
            }
            RunState::Reverting => {
                if run.step < 0 {
                    run.state = RunState::Failed;
                    commit(engine, worker, &run, None).await?;
                    continue;
                }
                let step = flow.steps[run.step as usize].clone();
                let name = step.name();
                let started = now_ms();
                let (result, _) =
                    attempt_step(engine, worker, &mut run, &*step, Phase::Revert).await?;
                match result {
                    Ok(()) => {
                        let l = log(run.step, name, "revert", run.attempt, "ok", None, started);
                        run.step -= 1;
                        run.attempt = 0;
                        commit(engine, worker, &run, Some(l)).await?;
                    }
                    Err(e) => {
                        let attempts = run.attempt + 1;
                        if attempts as u32 >= cfg.max_revert_attempts {
                            // Give up on this step but keep reverting the earlier ones; the
                            // reason says what may be left (a later delete cleans it up).
                            warn!(step = name, error = %e.message, "revert failed; continuing");
                            let l = log(
                                run.step,
                                name,
                                "revert",
                                run.attempt,
                                "error",
                                Some(&e.message),
                                started,
                            );
                            let mut reason = run.reason.take().unwrap_or_default();
                            reason.push_str(&format!(
                                "; revert of step {name} incomplete: {}",
                                e.message
                            ));
                            run.reason = Some(reason);
                            run.step -= 1;
                            run.attempt = 0;
                            commit(engine, worker, &run, Some(l)).await?;
                        } else {
                            let l = log(
                                run.step,
                                name,
                                "revert",
                                run.attempt,
                                "error",
                                Some(&e.message),
                                started,
                            );
                            run.attempt = attempts;
                            commit(engine, worker, &run, Some(l)).await?;
                            sleep_renewing(engine, worker, &run.id, cfg.backoff(attempts as u32))
                                .await?;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Execute,
    Revert,
}

fn log<'a>(
    step: i64,
    name: &'a str,
    phase: &'a str,
    attempt: i64,
    outcome: &'a str,
    error: Option<&'a str>,
    started_ms: i64,
) -> StepLog<'a> {
    StepLog {
        step,
        name,
        phase,
        attempt,
        outcome,
        error,
        started_ms,
    }
}

/// Switch to reverting, starting with the failed step itself (it may have done part of its work).
async fn start_revert<E: Send + Sync + 'static>(
    engine: &Engine<E>,
    worker: &str,
    run: &mut RunRecord,
    name: &str,
    reason: String,
    started: i64,
) -> Result<(), Abandon> {
    let l = log(
        run.step,
        name,
        "execute",
        run.attempt,
        "error",
        Some(&reason),
        started,
    );
    run.state = RunState::Reverting;
    run.attempt = 0;
    run.reason = Some(reason.clone());
    commit(engine, worker, run, Some(l)).await?;
    Ok(())
}

/// Run one attempt of a step under its timeout while renewing the lease. Returns the step's
/// result and whether cancellation was requested meanwhile.
async fn attempt_step<E: Send + Sync + 'static>(
    engine: &Engine<E>,
    worker: &str,
    run: &mut RunRecord,
    step: &dyn Step<E>,
    phase: Phase,
) -> Result<(Result<(), StepError>, bool), Abandon> {
    let inner = &engine.inner;
    let cfg = &inner.config;
    let timeout = step.timeout().unwrap_or(cfg.step_timeout);
    let run_id = run.id.clone();
    let key = run.key.clone();
    let input = run.input.clone();
    let attempt = run.attempt as u32;
    let span = info_span!(
        "step",
        step = step.name(),
        attempt,
        revert = phase == Phase::Revert
    );
    let mut ctx = StepCtx {
        env: &*inner.env,
        run_id: &run_id,
        key: &key,
        input: &input,
        vars: &mut run.vars,
        attempt,
    };
    let fut = async {
        let work = match phase {
            Phase::Execute => step.execute(&mut ctx),
            Phase::Revert => step.revert(&mut ctx),
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(StepError::retry(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }
    .instrument(span);
    tokio::pin!(fut);
    let mut cancel = false;
    let renew_every = cfg.lease_ttl / 3;
    loop {
        tokio::select! {
            r = &mut fut => return Ok((r, cancel)),
            _ = tokio::time::sleep(renew_every) => {
                match inner.db.renew(&run_id, worker, cfg.lease_ttl).await? {
                    Some(c) => cancel |= c,
                    // Someone else owns the run now: stop touching the cloud for it.
                    None => return Err(Abandon::LeaseLost),
                }
            }
        }
    }
}

async fn sleep_renewing<E: Send + Sync + 'static>(
    engine: &Engine<E>,
    worker: &str,
    run_id: &str,
    total: Duration,
) -> Result<(), Abandon> {
    let cfg = &engine.inner.config;
    let deadline = tokio::time::Instant::now() + total;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        let chunk = (deadline - now).min(cfg.lease_ttl / 3);
        tokio::time::sleep(chunk).await;
        if engine
            .inner
            .db
            .renew(run_id, worker, cfg.lease_ttl)
            .await?
            .is_none()
        {
            return Err(Abandon::LeaseLost);
        }
    }
}

async fn commit<E: Send + Sync + 'static>(
    engine: &Engine<E>,
    worker: &str,
    run: &RunRecord,
    log: Option<StepLog<'_>>,
) -> Result<bool, Abandon> {
    let p = Progress {
        state: run.state,
        step: run.step,
        attempt: run.attempt,
        vars: &run.vars,
        reason: run.reason.as_deref(),
        log,
    };
    engine
        .inner
        .db
        .commit(&run.id, worker, engine.inner.config.lease_ttl, &p)
        .await?
        .ok_or(Abandon::LeaseLost)
}

/// Run the finish hook, then free the key. A crash in between re-runs the hook.
async fn settle<E: Send + Sync + 'static>(
    engine: &Engine<E>,
    worker: &str,
    run: RunRecord,
) -> Result<(), Abandon> {
    let inner = &engine.inner;
    if let Some(hook) = &inner.hook {
        let mut attempt = 0u32;
        loop {
            match hook.finished(&inner.env, &run).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    warn!(error = %e, attempt, "finish hook failed; retrying");
                    sleep_renewing(engine, worker, &run.id, inner.config.backoff(attempt)).await?;
                }
            }
        }
    }
    if !inner.db.mark_settled(&run.id, worker).await? {
        return Err(Abandon::LeaseLost);
    }
    info!(
        state = run.state.as_str(),
        reason = run.reason.as_deref().unwrap_or(""),
        "flow run finished"
    );
    Ok(())
}
