//! The engine and the LB flows on PostgreSQL, with two workers competing for runs
//! (`FOR UPDATE SKIP LOCKED`). Needs `KLB_TEST_POSTGRES_URL` (scripts/start-postgres.sh prints
//! one); each test works in its own schema and drops it.

use std::time::Duration;

use klb_flow::lb::{LbInput, kind};
use klb_flow::{Backend, Db, EngineConfig, RunState};

use crate::support::{Harness, LiveLb, diff, expected};

struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn create() -> Option<Schema> {
        let Ok(url) = std::env::var("KLB_TEST_POSTGRES_URL") else {
            eprintln!("skipping PostgreSQL test: KLB_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("klb_flow_{}", uuid::Uuid::new_v4().simple());
        let admin = Db::connect(&url).await.expect("connect to PostgreSQL");
        admin
            .execute_raw(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create schema");
        let sep = if url.contains('?') { '&' } else { '?' };
        Some(Schema {
            url: format!("{url}{sep}options=-csearch_path%3D{name}"),
            name,
        })
    }

    async fn drop(self) {
        let url = self
            .url
            .split("options=")
            .next()
            .unwrap()
            .trim_end_matches(['?', '&'])
            .to_string();
        if let Ok(db) = Db::connect(&url).await {
            let _ = db
                .execute_raw(&format!("DROP SCHEMA {} CASCADE", self.name))
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lb_flows_on_postgres_with_two_workers() {
    let Some(schema) = Schema::create().await else {
        return;
    };
    let db = Db::connect(&schema.url).await.unwrap();
    assert_eq!(db.backend(), Backend::Postgres);
    let h = Harness::with_db(db, None, EngineConfig::for_tests()).await;
    let w1 = h.start_worker(8);
    let w2 = h.start_worker(8);
    let lbs: Vec<String> = (0..10).map(|i| format!("pg-lb-{i}")).collect();
    let mut ids = Vec::new();
    for lb in &lbs {
        ids.push(
            h.submit(h.create_input(lb, &[80], 2).request(kind::CREATE_LB))
                .await,
        );
    }
    ids.push(
        h.submit(LbInput::delete(&lbs[0]).request(kind::DELETE_LB))
            .await,
    );
    for id in &ids {
        let r = h.engine.wait(id, Duration::from_secs(60)).await.unwrap();
        assert!(r.state.is_final());
    }
    // Crash one worker; the other keeps going.
    w1.crash();
    let id = h
        .submit(LbInput::delete(&lbs[1]).request(kind::DELETE_LB))
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
    schema.drop().await;
}
