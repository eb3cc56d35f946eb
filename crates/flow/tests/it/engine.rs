//! The engine with test flows: ordering, retries, timeouts, revert, cancellation, takeover,
//! per-key serialization, the finish hook.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use klb_flow::{
    Db, Engine, EngineConfig, FinishHook, Flow, FlowError, RunRecord, RunRequest, RunState, Step,
    StepCtx, StepError, Var,
};
use tokio::sync::Mutex;

#[derive(Default)]
struct Env {
    log: Mutex<Vec<String>>,
    /// Scripted outcomes per step name (popped per attempt); empty = success.
    plan: Mutex<HashMap<&'static str, VecDeque<Outcome>>>,
    finished: AtomicU32,
}

#[derive(Clone, Copy)]
enum Outcome {
    Retry,
    Fatal,
    Pending,
    Sleep(Duration),
}

struct Rec(&'static str);

#[async_trait]
impl Step<Env> for Rec {
    fn name(&self) -> &'static str {
        self.0
    }

    async fn execute(&self, ctx: &mut StepCtx<'_, Env>) -> Result<(), StepError> {
        let key = ctx.key.to_string();
        ctx.env
            .log
            .lock()
            .await
            .push(format!("{key}:exec:{}", self.0));
        let next = ctx
            .env
            .plan
            .lock()
            .await
            .get_mut(self.0)
            .and_then(|q| q.pop_front());
        match next {
            None => {
                ctx.set_var(Var::new(self.0), &"done".to_owned());
                Ok(())
            }
            Some(Outcome::Retry) => Err(StepError::retry("scripted")),
            Some(Outcome::Fatal) => Err(StepError::fatal("scripted fatal")),
            Some(Outcome::Pending) => Err(StepError::pending("not yet")),
            Some(Outcome::Sleep(d)) => {
                tokio::time::sleep(d).await;
                ctx.set_var(Var::new(self.0), &"done".to_owned());
                Ok(())
            }
        }
    }

    async fn revert(&self, ctx: &mut StepCtx<'_, Env>) -> Result<(), StepError> {
        let key = ctx.key.to_string();
        ctx.env
            .log
            .lock()
            .await
            .push(format!("{key}:revert:{}", self.0));
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(1)
    }
}

struct CountFinish;

#[async_trait]
impl FinishHook<Env> for CountFinish {
    async fn finished(&self, env: &Env, _run: &RunRecord) -> Result<(), FlowError> {
        env.finished.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct T {
    _dir: tempfile::TempDir,
    engine: Engine<Env>,
}

async fn setup() -> T {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("e.db").display()
    ))
    .await
    .unwrap();
    db.migrate().await.unwrap();
    db.migrate().await.expect("migrate is idempotent");
    let flow = Flow::new("abc")
        .step(Rec("a"))
        .step(Rec("b"))
        .step(Rec("c"));
    let engine = Engine::new(
        db,
        Arc::new(Env::default()),
        vec![flow],
        EngineConfig::for_tests(),
    )
    .with_finish_hook(Arc::new(CountFinish));
    T { _dir: dir, engine }
}

impl T {
    async fn plan(&self, step: &'static str, outcomes: &[Outcome]) {
        self.engine
            .env()
            .plan
            .lock()
            .await
            .insert(step, outcomes.iter().copied().collect());
    }

    async fn log(&self) -> Vec<String> {
        self.engine.env().log.lock().await.clone()
    }

    async fn run(&self, key: &str) -> RunRecord {
        let id = self
            .engine
            .submit(RunRequest::new("abc", key, serde_json::json!({})).unwrap())
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let w = tokio::spawn(self.engine.worker(2).run(async {
            let _ = rx.await;
        }));
        let r = self
            .engine
            .wait(&id, Duration::from_secs(20))
            .await
            .unwrap();
        let _ = tx.send(());
        w.await.unwrap().unwrap();
        r
    }
}

/// One case: a script for step `b`, the expected end state and step log.
async fn check(plan_b: &[Outcome], state: RunState, log: &[&str]) {
    let t = setup().await;
    t.plan("b", plan_b).await;
    let run = t.run("k").await;
    assert_eq!(run.state, state, "{:?}", run.reason);
    let want: Vec<String> = log.iter().map(|s| format!("k:{s}")).collect();
    assert_eq!(t.log().await, want);
    assert_eq!(
        t.engine.env().finished.load(Ordering::SeqCst),
        1,
        "finish hook once"
    );
}

#[tokio::test]
async fn outcomes() {
    use Outcome::*;
    check(&[], RunState::Completed, &["exec:a", "exec:b", "exec:c"]).await;
    check(
        &[Retry, Retry],
        RunState::Completed,
        &["exec:a", "exec:b", "exec:b", "exec:b", "exec:c"],
    )
    .await;
    check(
        &[Pending, Pending],
        RunState::Completed,
        &["exec:a", "exec:b", "exec:b", "exec:b", "exec:c"],
    )
    .await;
    check(
        &[Fatal],
        RunState::Failed,
        &["exec:a", "exec:b", "revert:b", "revert:a"],
    )
    .await;
    // max_attempts = 4 in the test config.
    check(
        &[Retry, Retry, Retry, Retry],
        RunState::Failed,
        &[
            "exec:a", "exec:b", "exec:b", "exec:b", "exec:b", "revert:b", "revert:a",
        ],
    )
    .await;
    // A hung step times out (300 ms in tests) and is retried.
    check(
        &[Sleep(Duration::from_secs(3600))],
        RunState::Completed,
        &["exec:a", "exec:b", "exec:b", "exec:c"],
    )
    .await;
}

#[tokio::test]
async fn failed_run_keeps_reason_and_history() {
    let t = setup().await;
    t.plan("c", &[Outcome::Fatal]).await;
    let run = t.run("k").await;
    assert_eq!(run.state, RunState::Failed);
    assert_eq!(run.reason.as_deref(), Some("step c failed: scripted fatal"));
    let steps = t.engine.db().steps(&run.id).await.unwrap();
    let summary: Vec<_> = steps
        .iter()
        .map(|s| format!("{}:{}:{}", s.phase, s.name, s.outcome))
        .collect();
    assert_eq!(
        summary,
        [
            "execute:a:ok",
            "execute:b:ok",
            "execute:c:error",
            "revert:c:ok",
            "revert:b:ok",
            "revert:a:ok"
        ]
    );
    assert!(run.settled);
}

#[tokio::test]
async fn unknown_flow_is_rejected_at_submit() {
    let t = setup().await;
    let err = t
        .engine
        .submit(RunRequest::new("nope", "k", 1).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, FlowError::UnknownFlow(_)));
}

/// A worker killed inside step b: another worker takes the run over once the lease expires and
/// re-executes b (at-least-once), never a, and completes.
#[tokio::test]
async fn crashed_worker_is_taken_over() {
    let t = setup().await;
    t.plan("b", &[Outcome::Sleep(Duration::from_secs(3600))])
        .await;
    let id = t
        .engine
        .submit(RunRequest::new("abc", "k", 0).unwrap())
        .await
        .unwrap();
    let w1 = tokio::spawn(t.engine.worker(1).run(std::future::pending()));
    for _ in 0..2000 {
        if t.log().await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    w1.abort();
    let w2 = tokio::spawn(t.engine.worker(1).run(std::future::pending()));
    let run = t.engine.wait(&id, Duration::from_secs(20)).await.unwrap();
    w2.abort();
    assert_eq!(run.state, RunState::Completed);
    assert_eq!(
        t.log().await,
        ["k:exec:a", "k:exec:b", "k:exec:b", "k:exec:c"]
    );
    assert_eq!(
        run.vars.get("a"),
        Some(&serde_json::json!("done")),
        "vars survive the crash"
    );
}

/// Runs of one key never overlap and keep submission order; other keys are not blocked.
#[tokio::test]
async fn runs_are_serialized_per_key() {
    let t = setup().await;
    t.plan(
        "b",
        &[
            Outcome::Sleep(Duration::from_millis(30)),
            Outcome::Sleep(Duration::from_millis(30)),
        ],
    )
    .await;
    let mut ids = Vec::new();
    for key in ["x", "x", "y"] {
        ids.push(
            t.engine
                .submit(RunRequest::new("abc", key, 0).unwrap())
                .await
                .unwrap(),
        );
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(t.engine.worker(8).run(async {
        let _ = rx.await;
    }));
    for id in &ids {
        assert_eq!(
            t.engine
                .wait(id, Duration::from_secs(20))
                .await
                .unwrap()
                .state,
            RunState::Completed
        );
    }
    let _ = tx.send(());
    w.await.unwrap().unwrap();
    let x: Vec<String> = t
        .log()
        .await
        .into_iter()
        .filter(|l| l.starts_with("x:"))
        .collect();
    assert_eq!(
        x,
        [
            "x:exec:a", "x:exec:b", "x:exec:c", "x:exec:a", "x:exec:b", "x:exec:c"
        ]
    );
}

/// `cancel_previous` stops the running run at its next step boundary and reverts it.
#[tokio::test]
async fn cancel_previous_reverts_the_running_run() {
    let t = setup().await;
    t.plan("b", &[Outcome::Sleep(Duration::from_millis(100))])
        .await;
    let first = t
        .engine
        .submit(RunRequest::new("abc", "k", 0).unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(t.engine.worker(2).run(async {
        let _ = rx.await;
    }));
    for _ in 0..2000 {
        if t.log().await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut req = RunRequest::new("abc", "k", 0).unwrap();
    req.cancel_previous = true;
    let second = t.engine.submit(req).await.unwrap();
    let r1 = t
        .engine
        .wait(&first, Duration::from_secs(20))
        .await
        .unwrap();
    let r2 = t
        .engine
        .wait(&second, Duration::from_secs(20))
        .await
        .unwrap();
    let _ = tx.send(());
    w.await.unwrap().unwrap();
    assert_eq!(r1.state, RunState::Failed);
    assert_eq!(r1.reason.as_deref(), Some("cancelled by a later request"));
    assert_eq!(r2.state, RunState::Completed);
    assert_eq!(
        t.log().await,
        [
            "k:exec:a",
            "k:exec:b",
            "k:revert:c",
            "k:revert:b",
            "k:revert:a",
            "k:exec:a",
            "k:exec:b",
            "k:exec:c"
        ]
    );
}

/// Clean shutdown releases leases at once: another worker resumes without waiting for expiry.
#[tokio::test]
async fn shutdown_releases_leases() {
    let t = setup().await;
    t.plan("b", &[Outcome::Sleep(Duration::from_secs(3600))])
        .await;
    let id = t
        .engine
        .submit(RunRequest::new("abc", "k", 0).unwrap())
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(t.engine.worker(1).run(async {
        let _ = rx.await;
    }));
    for _ in 0..2000 {
        if t.log().await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = tx.send(());
    w.await.unwrap().unwrap();
    let r = t.engine.db().run(&id).await.unwrap().unwrap();
    assert_eq!(r.state, RunState::Running);
    assert_eq!(r.step, 1, "resumes at b");
    let w2 = tokio::spawn(t.engine.worker(1).run(std::future::pending()));
    let r = t.engine.wait(&id, Duration::from_secs(20)).await.unwrap();
    w2.abort();
    assert_eq!(r.state, RunState::Completed);
}

/// A worker whose lease was taken (it stalled past the TTL, another node took over) stops
/// touching the run: no further step, no write. When the other owner goes away, the run
/// resumes from the last committed step.
#[tokio::test]
async fn a_worker_that_lost_its_lease_stops() {
    let t = setup().await;
    t.plan("b", &[Outcome::Sleep(Duration::from_millis(600))])
        .await;
    let id = t
        .engine
        .submit(RunRequest::new("abc", "k", 0).unwrap())
        .await
        .unwrap();
    let w = tokio::spawn(t.engine.worker(1).run(std::future::pending()));
    for _ in 0..2000 {
        if t.log().await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let far = klb_flow::db::now_ms() + 3_600_000;
    t.engine
        .db()
        .execute_raw(&format!(
            "UPDATE flow_runs SET lease_owner = 'thief', lease_until = {far} WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = t.engine.db().run(&id).await.unwrap().unwrap();
    assert_eq!(
        r.step, 1,
        "the old owner committed nothing after losing the lease"
    );
    assert_eq!(t.log().await, ["k:exec:a", "k:exec:b"]);
    // The thief dies: its lease expires and the run is resumed at b.
    t.engine
        .db()
        .execute_raw(&format!(
            "UPDATE flow_runs SET lease_until = 0 WHERE id = '{id}'"
        ))
        .await
        .unwrap();
    let r = t.engine.wait(&id, Duration::from_secs(20)).await.unwrap();
    w.abort();
    assert_eq!(r.state, RunState::Completed);
    assert_eq!(
        t.log().await,
        ["k:exec:a", "k:exec:b", "k:exec:b", "k:exec:c"]
    );
}
