//! The engine and the LB flows on PostgreSQL, with two workers competing for runs
//! (`FOR UPDATE SKIP LOCKED`). Needs `KLB_TEST_POSTGRES_URL` (scripts/start-postgres.sh prints
//! one); each test works in its own schema and drops it.

use std::time::Duration;

use klb_flow::lb::{FlowKind, LbInput};
use klb_flow::{Backend, Db, EngineConfig, RunState};
use klb_test_support::db::TestDb;

use crate::lb_faults::{Scenario, crash_cases_on, run_all_on};
use crate::support::{Harness, LiveLb, diff, expected};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_flows_on_postgres_with_two_workers() {
    let Some(schema) = TestDb::postgres().await else {
        return;
    };
    let db = Db::connect(schema.url()).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    let h = Harness::with_db(db, None, EngineConfig::for_tests()).await;
    let w1 = h.start_worker(8);
    let w2 = h.start_worker(8);
    let lbs: Vec<String> = (0..10).map(|i| format!("pg-lb-{i}")).collect();
    let mut ids = Vec::new();
    for lb in &lbs {
        ids.push(
            h.submit(h.create_input(lb, &[80], 2).request(FlowKind::CreateLb))
                .await,
        );
    }
    ids.push(
        h.submit(LbInput::delete(&lbs[0]).request(FlowKind::DeleteLb))
            .await,
    );
    for id in &ids {
        let r = h.engine.wait(id, Duration::from_secs(60)).await.unwrap();
        assert!(r.state.is_final());
    }
    // Crash one worker; the other keeps going.
    w1.crash();
    let id = h
        .submit(LbInput::delete(&lbs[1]).request(FlowKind::DeleteLb))
        .await;
    assert_eq!(
        h.engine
            .wait(&id, Duration::from_secs(60))
            .await
            .unwrap()
            .state,
        RunState::Completed
    );
    w2.stop().await;
    let live: Vec<LiveLb<'_>> = lbs[2..]
        .iter()
        .map(|lb| LiveLb {
            lb_id: lb,
            vms: 2,
            listeners: 1,
        })
        .collect();
    assert_eq!(diff(&h.ledger_names().await, &expected(&live)), None);
    drop(h);
    drop(schema);
}

/// The crash sweep of the create flow, on PostgreSQL (leases, `SKIP LOCKED` takeover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_crash_at_every_call_on_postgres() {
    if std::env::var("KLB_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipping PostgreSQL test: KLB_TEST_POSTGRES_URL is not set");
        return;
    }
    run_all_on(crash_cases_on(Scenario::Create).await, true).await;
}
