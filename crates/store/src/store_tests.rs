use std::time::Duration;

use chrono::Utc;
use klb_model::*;
use klb_test_support::db::TestDb;
use klb_test_support::fixtures::{load_balancer, member, pool};
use uuid::Uuid;

use crate::*;

/// A store on a temp SQLite file, or on a fresh PostgreSQL schema when
/// `KLB_TEST_POSTGRES_URL` is set (dropped with the returned handle).
pub(crate) async fn test_store() -> (Store, TestDb) {
    let db = TestDb::new().await;
    (Store::open(db.url()).await.unwrap(), db)
}

fn lb(status: ProvisioningStatus) -> LoadBalancer {
    LoadBalancer {
        name: Some("lb".into()),
        ..load_balancer("p1", status)
    }
}

async fn enqueue(store: &Store, lb: &LoadBalancer, op: JobOp, kind: Kind, id: Uuid) {
    let mut tx = store.begin().await.unwrap();
    tx.enqueue_job(NewJob {
        loadbalancer_id: lb.id.to_string(),
        op,
        target_kind: kind,
        target_id: id.to_string(),
        payload: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn create_then_settle_success_makes_active() {
    let (store, _dir) = test_store().await;
    let lb = lb(ProvisioningStatus::PendingCreate);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&store, &lb, JobOp::Create, Kind::LoadBalancer, lb.id).await;
    let job = store
        .claim_job("w1", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.target_id, lb.id.to_string());
    assert_eq!(job.attempts, 1);
    // The lease is held: nothing else to claim.
    assert!(
        store
            .claim_job("w2", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    store.settle_job(&job, Outcome::Success).await.unwrap();
    let got: LoadBalancer = store.get_resource(lb.id).await.unwrap().unwrap();
    assert_eq!(got.provisioning_status, ProvisioningStatus::Active);
    assert!(store.jobs_of(&lb.id.to_string()).await.unwrap().is_empty());
}

#[tokio::test]
async fn jobs_are_claimed_in_bulk_one_per_lb_and_settled_together() {
    let (store, _dir) = test_store().await;
    let (a, b) = (
        lb(ProvisioningStatus::PendingCreate),
        lb(ProvisioningStatus::PendingCreate),
    );
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&a).await.unwrap();
    tx.insert_resource(&b).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&store, &a, JobOp::Create, Kind::LoadBalancer, a.id).await;
    enqueue(&store, &a, JobOp::Update, Kind::LoadBalancer, a.id).await;
    enqueue(&store, &b, JobOp::Create, Kind::LoadBalancer, b.id).await;
    let jobs = store
        .claim_jobs("w1", Duration::from_secs(30), 10)
        .await
        .unwrap();
    // A's update waits behind A's create: one job per LB, oldest first.
    let got: Vec<(&str, JobOp)> = jobs
        .iter()
        .map(|j| (j.loadbalancer_id.as_str(), j.op))
        .collect();
    let (a_id, b_id) = (a.id.to_string(), b.id.to_string());
    assert_eq!(
        got,
        vec![
            (a_id.as_str(), JobOp::Create),
            (b_id.as_str(), JobOp::Create)
        ]
    );
    assert!(
        store
            .claim_jobs("w2", Duration::from_secs(30), 10)
            .await
            .unwrap()
            .is_empty(),
        "leases held"
    );
    store.settle_jobs(&jobs, Outcome::Success).await.unwrap();
    for id in [a.id, b.id] {
        let got: LoadBalancer = store.get_resource(id).await.unwrap().unwrap();
        assert_eq!(got.provisioning_status, ProvisioningStatus::Active);
    }
    // Now A's update is the head of its queue.
    let next = store
        .claim_jobs("w1", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].op, JobOp::Update);
}

#[tokio::test]
async fn jobs_of_one_lb_run_in_order_and_expired_leases_are_taken_over() {
    let (store, _dir) = test_store().await;
    let lb = lb(ProvisioningStatus::PendingCreate);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&store, &lb, JobOp::Create, Kind::LoadBalancer, lb.id).await;
    enqueue(&store, &lb, JobOp::Update, Kind::LoadBalancer, lb.id).await;
    let first = store
        .claim_job("w1", Duration::from_millis(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.op, JobOp::Create);
    tokio::time::sleep(Duration::from_millis(5)).await;
    // The first lease expired: the same job is claimed again, not the second one.
    let again = store
        .claim_job("w2", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.attempts, 2);
    assert!(
        !store
            .renew_lease(&first.id, "w1", Duration::from_secs(1))
            .await
            .unwrap()
    );
    store.settle_job(&again, Outcome::Success).await.unwrap();
    let second = store
        .claim_job("w2", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.op, JobOp::Update);
}

#[tokio::test]
async fn pool_delete_removes_members_and_failure_marks_error() {
    let (store, _dir) = test_store().await;
    let lb = lb(ProvisioningStatus::PendingUpdate);
    let p = pool(&lb, ProvisioningStatus::PendingDelete);
    let m = member(&p, ProvisioningStatus::Active);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.insert_resource(&p).await.unwrap();
    tx.insert_resource(&m).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&store, &lb, JobOp::Delete, Kind::Pool, p.id).await;
    let job = store
        .claim_job("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.settle_job(&job, Outcome::Success).await.unwrap();
    assert!(store.get_resource::<Pool>(p.id).await.unwrap().is_none());
    assert!(store.get_resource::<Member>(m.id).await.unwrap().is_none());
    assert_eq!(
        store
            .get_resource::<LoadBalancer>(lb.id)
            .await
            .unwrap()
            .unwrap()
            .provisioning_status,
        ProvisioningStatus::Active
    );

    // A failed member create: the member is ERROR, the LB goes back to ACTIVE.
    let p2 = pool(&lb, ProvisioningStatus::Active);
    let m2 = member(&p2, ProvisioningStatus::PendingCreate);
    let mut locked = lb.clone();
    locked.provisioning_status = ProvisioningStatus::PendingUpdate;
    let mut tx = store.begin().await.unwrap();
    tx.put_resource(&locked).await.unwrap();
    tx.insert_resource(&p2).await.unwrap();
    tx.insert_resource(&m2).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&store, &lb, JobOp::Create, Kind::Member, m2.id).await;
    let job = store
        .claim_job("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store
        .settle_job(&job, Outcome::Failed("agent unreachable".into()))
        .await
        .unwrap();
    let doc = store
        .get(Kind::Member, &m2.id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.status(), Some(ProvisioningStatus::Error));
    // The body is rewritten through the model type: status and `updated_at` move together;
    // the reason stays on the job row.
    let stored: Member = doc.decode().unwrap();
    assert_eq!(stored.provisioning_status, ProvisioningStatus::Error);
    assert!(stored.updated_at.is_some_and(|t| t >= m2.created_at));
    assert_eq!(
        store
            .get_resource::<LoadBalancer>(lb.id)
            .await
            .unwrap()
            .unwrap()
            .provisioning_status,
        ProvisioningStatus::Active
    );
    let jobs = store.jobs_of(&lb.id.to_string()).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Failed);
    assert_eq!(jobs[0].last_error.as_deref(), Some("agent unreachable"));
}

#[tokio::test]
async fn lb_delete_hides_the_lb_and_removes_children() {
    let (store, _dir) = test_store().await;
    let lb = lb(ProvisioningStatus::PendingDelete);
    let p = pool(&lb, ProvisioningStatus::Active);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.insert_resource(&p).await.unwrap();
    tx.commit().await.unwrap();
    enqueue(&store, &lb, JobOp::Delete, Kind::LoadBalancer, lb.id).await;
    let job = store
        .claim_job("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.settle_job(&job, Outcome::Success).await.unwrap();
    assert!(
        store
            .get_resource::<LoadBalancer>(lb.id)
            .await
            .unwrap()
            .is_none()
    );
    let raw = store
        .get(Kind::LoadBalancer, &lb.id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.status(), Some(ProvisioningStatus::Deleted));
    assert!(store.get_resource::<Pool>(p.id).await.unwrap().is_none());
    assert!(
        store
            .list(&ListQuery::kind(Kind::LoadBalancer))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn generic_documents_with_versions() {
    let (store, _dir) = test_store().await;
    let doc = flavor_doc("f1", r#"{"name":"small"}"#);
    let mut tx = store.begin().await.unwrap();
    tx.insert(&doc).await.unwrap();
    tx.commit().await.unwrap();
    // A duplicate fails (and, on PostgreSQL, aborts its transaction, which is dropped).
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(
        tx.insert(&doc).await,
        Err(StoreError::Duplicate { .. })
    ));
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    let mut got = tx
        .get_for_update(DocumentKind::Flavor, "f1")
        .await
        .unwrap()
        .unwrap();
    got.body = r#"{"name":"large"}"#.into();
    tx.update(&mut got).await.unwrap();
    assert_eq!(got.version, 2);
    let mut stale = doc.clone();
    assert!(matches!(
        tx.update(&mut stale).await,
        Err(StoreError::VersionConflict { .. })
    ));
    tx.commit().await.unwrap();
    let list = store
        .list(&ListQuery::kind(DocumentKind::Flavor))
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].body.contains("large"));
    let mut tx = store.begin().await.unwrap();
    assert!(tx.delete(DocumentKind::Flavor, "f1").await.unwrap());
    tx.commit().await.unwrap();
    assert!(
        store
            .get(DocumentKind::Flavor, "f1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn concurrent_writers_never_see_busy() {
    let (store, _dir) = test_store().await;
    let mut handles = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..10 {
                let lb = lb(ProvisioningStatus::PendingCreate);
                let mut tx = store.begin().await.unwrap();
                tx.insert_resource(&lb).await.unwrap();
                tx.commit().await.unwrap();
                store
                    .list(&ListQuery::kind(Kind::LoadBalancer))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(
        store
            .list(&ListQuery::kind(Kind::LoadBalancer))
            .await
            .unwrap()
            .len(),
        160
    );
    let page = store
        .list(&ListQuery {
            kind: Some(Kind::LoadBalancer.into()),
            limit: Some(7),
            ..Default::default()
        })
        .await
        .unwrap();
    let next = store
        .list(&ListQuery {
            kind: Some(Kind::LoadBalancer.into()),
            limit: Some(7),
            after: Some((page[6].created_at.clone(), page[6].id.clone())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 7);
    assert!(next.iter().all(|d| !page.iter().any(|p| p.id == d.id)));
}

/// `list_stamps` returns what `list` returns (same rows, order, versions) for every list
/// shape, including ids the aggregated row cannot carry (separator characters).
#[tokio::test]
async fn list_stamps_match_list() {
    let (store, _dir) = test_store().await;
    let doc = |id: &str, project: &str, created: &str| Document {
        kind: DocumentKind::Quota,
        id: id.into(),
        project_id: Some(project.into()),
        loadbalancer_id: None,
        parent_id: None,
        ref_id: None,
        position: 0,
        provisioning_status: None,
        created_at: created.into(),
        version: 1,
        body: "{}".into(),
    };
    let mut tx = store.begin().await.unwrap();
    for (i, id) in ["b", "a", "c", "d", "e"].iter().enumerate() {
        // "a" and "b" share a creation time: the id breaks the tie.
        let created = format!("2026-01-01T00:00:0{}.000000Z", i.max(1));
        let project = if i % 2 == 0 { "p1" } else { "p2" };
        tx.insert(&doc(id, project, &created)).await.unwrap();
    }
    let mut d = tx
        .get_for_update(DocumentKind::Quota, "c")
        .await
        .unwrap()
        .unwrap();
    tx.update(&mut d).await.unwrap();
    tx.commit().await.unwrap();

    let check = |q: ListQuery| {
        let store = store.clone();
        async move {
            let docs = store.list(&q).await.unwrap();
            let stamps = store.list_stamps(&q).await.unwrap();
            // The aggregated query itself answers these (no fallback).
            assert_eq!(
                store.list_stamps_joined(&q).await.unwrap().as_ref(),
                Some(&stamps)
            );
            assert_eq!(
                stamps,
                docs.iter().map(Document::stamp).collect::<Vec<_>>(),
                "{q:?}"
            );
            stamps
        }
    };
    let all = check(ListQuery::kind(DocumentKind::Quota)).await;
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    assert_eq!(all[2].version, 2);
    let mut q = ListQuery::kind(DocumentKind::Quota);
    q.project_id = Some("p1".into());
    assert_eq!(check(q.clone()).await.len(), 3);
    q.limit = Some(2);
    q.after = Some(("2026-01-01T00:00:01.000000Z".into(), "a".into()));
    assert_eq!(check(q.clone()).await.len(), 2);
    q.descending = true;
    q.after = Some(("2026-01-01T00:00:04.000000Z".into(), "e".into()));
    let desc = check(q).await;
    assert_eq!(desc[0].id, "c");
    assert!(
        check(ListQuery::kind(DocumentKind::Secret))
            .await
            .is_empty()
    );

    // Ids with the separators force the row-by-row fallback; results stay the same.
    let mut tx = store.begin().await.unwrap();
    tx.insert(&doc("x\u{1e}y", "p1", "2026-01-01T00:00:08.000000Z"))
        .await
        .unwrap();
    tx.insert(&doc("z\u{1f}w", "p1", "2026-01-01T00:00:09.000000Z"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let q = ListQuery::kind(DocumentKind::Quota);
    assert_eq!(store.list_stamps_joined(&q).await.unwrap(), None);
    let all = store.list_stamps(&q).await.unwrap();
    let docs = store.list(&q).await.unwrap();
    assert_eq!(all, docs.iter().map(Document::stamp).collect::<Vec<_>>());
    assert_eq!(all.len(), 7);
    assert_eq!(all[6].id, "z\u{1f}w");
    let got = store
        .get_many(
            DocumentKind::Quota,
            &["x\u{1e}y".into(), "a".into(), "missing".into()],
        )
        .await
        .unwrap();
    let mut got: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    got.sort();
    assert_eq!(got, ["a", "x\u{1e}y"]);
}

/// Concurrent claimers (claim is one statement, no explicit transaction) never get the same
/// job twice, and every job is claimed.
#[tokio::test]
async fn concurrent_claims_take_each_job_once() {
    let (store, _dir) = test_store().await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        let lb = lb(ProvisioningStatus::PendingCreate);
        enqueue(&store, &lb, JobOp::Create, Kind::LoadBalancer, lb.id).await;
        ids.push(lb.id.to_string());
    }
    let mut workers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(job) = store
                .claim_job(&format!("w{w}"), Duration::from_secs(30))
                .await
                .unwrap()
            {
                assert_eq!(job.lease_owner.as_deref(), Some(format!("w{w}").as_str()));
                got.push(job.loadbalancer_id);
            }
            got
        }));
    }
    let mut claimed = Vec::new();
    for w in workers {
        claimed.extend(w.await.unwrap());
    }
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids);
}

fn flavor_doc(id: &str, body: &str) -> Document {
    Document {
        kind: DocumentKind::Flavor,
        id: id.into(),
        project_id: None,
        loadbalancer_id: None,
        parent_id: None,
        ref_id: None,
        position: 0,
        provisioning_status: None,
        created_at: timestamp(Utc::now()),
        version: 1,
        body: body.into(),
    }
}

fn new_job(lb: &str) -> NewJob {
    NewJob {
        loadbalancer_id: lb.into(),
        op: JobOp::Update,
        target_kind: Kind::LoadBalancer,
        target_id: "f1".into(),
        payload: Some(r#"{"why":"test"}"#.into()),
    }
}

#[tokio::test]
async fn write_batches_apply_all_or_nothing() {
    let (store, _dir) = test_store().await;
    let mut batch = WriteBatch::new();
    batch.insert(flavor_doc("f1", r#"{"name":"small"}"#));
    let job = batch.enqueue(new_job("lb-a"));
    store.apply(batch).await.unwrap();
    let jobs = store.jobs_of("lb-a").await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, job);
    assert_eq!(jobs[0].state, JobState::Pending);
    assert_eq!(jobs[0].payload.as_deref(), Some(r#"{"why":"test"}"#));
    let stored = store
        .get(DocumentKind::Flavor, "f1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.version, stored.body.as_str()),
        (1, r#"{"name":"small"}"#)
    );

    // A versioned update and its job.
    let mut next = stored.clone();
    next.body = r#"{"name":"large"}"#.into();
    let mut batch = WriteBatch::new();
    batch.update(next.clone());
    batch.enqueue(new_job("lb-b"));
    store.apply(batch).await.unwrap();
    let stored = store
        .get(DocumentKind::Flavor, "f1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.version, stored.body.as_str()),
        (2, r#"{"name":"large"}"#)
    );
    assert_eq!(store.jobs_of("lb-b").await.unwrap().len(), 1);

    // The same (now stale) update: a conflict, and the job queued before it in the batch is
    // rolled back with it.
    let mut batch = WriteBatch::new();
    batch.enqueue(new_job("lb-c"));
    batch.update(next);
    match store.apply(batch).await {
        Err(StoreError::VersionConflict { kind, id, expected }) => {
            assert_eq!(
                (kind, id.as_str(), expected),
                (DocumentKind::Flavor, "f1", 1)
            );
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert!(store.jobs_of("lb-c").await.unwrap().is_empty());
    // An update of a missing document is a conflict too.
    let mut batch = WriteBatch::new();
    batch.update(flavor_doc("missing", "{}"));
    assert!(matches!(
        store.apply(batch).await,
        Err(StoreError::VersionConflict { .. })
    ));

    // A duplicate insert: nothing of the batch stays.
    let mut batch = WriteBatch::new();
    batch.insert(flavor_doc("f2", "{}"));
    batch.insert(flavor_doc("f1", "{}"));
    match store.apply(batch).await {
        Err(StoreError::Duplicate { .. }) => {}
        other => panic!("expected a duplicate, got {other:?}"),
    }
    assert!(
        store
            .get(DocumentKind::Flavor, "f2")
            .await
            .unwrap()
            .is_none()
    );
    let stored = store
        .get(DocumentKind::Flavor, "f1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 2);

    // Inside a transaction, a batch is part of it: rolled back with it.
    let mut tx = store.begin().await.unwrap();
    let mut batch = WriteBatch::new();
    batch.insert(flavor_doc("f3", "{}"));
    batch.enqueue(new_job("lb-d"));
    tx.apply(batch).await.unwrap();
    drop(tx);
    assert!(
        store
            .get(DocumentKind::Flavor, "f3")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.jobs_of("lb-d").await.unwrap().is_empty());
}

#[tokio::test]
async fn large_write_batches_span_statements_atomically() {
    let (store, _dir) = test_store().await;
    // More rows than one statement takes, with a duplicate at the very end.
    let mut batch = WriteBatch::new();
    for i in 0..1200 {
        batch.insert(flavor_doc(&format!("f{i}"), "{}"));
    }
    batch.insert(flavor_doc("f0", "{}"));
    assert!(matches!(
        store.apply(batch).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert!(
        store
            .list(&ListQuery::kind(DocumentKind::Flavor))
            .await
            .unwrap()
            .is_empty()
    );
    let mut batch = WriteBatch::new();
    for i in 0..1200 {
        batch.insert(flavor_doc(&format!("f{i}"), "{}"));
    }
    store.apply(batch).await.unwrap();
    assert_eq!(
        store
            .list(&ListQuery::kind(DocumentKind::Flavor))
            .await
            .unwrap()
            .len(),
        1200
    );
}

#[tokio::test]
async fn a_batch_enqueue_wakes_workers() {
    let (store, _dir) = test_store().await;
    let ready = store.jobs_ready();
    let mut batch = WriteBatch::new();
    batch.enqueue(new_job("lb-a"));
    store.apply(batch).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ready.notified())
        .await
        .expect("workers are notified after a batch that enqueued a job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_each_get_their_own_result() {
    let (store, _dir) = test_store().await;
    let mut batch = WriteBatch::new();
    for i in 0..40 {
        batch.insert(flavor_doc(&format!("f{i}"), "{}"));
    }
    store.apply(batch).await.unwrap();
    // 40 writers at once (grouped into shared statements on SQLite): the even ones update at
    // the stored version, the odd ones at a stale one. A stale writer fails alone.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut doc = flavor_doc(&format!("f{i}"), r#"{"v":2}"#);
                doc.version = if i % 2 == 0 { 1 } else { 7 };
                let mut batch = WriteBatch::new();
                batch.update(doc);
                batch.enqueue(new_job(&format!("lb-{i}")));
                store.apply(batch).await
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        let jobs = store.jobs_of(&format!("lb-{i}")).await.unwrap();
        let stored = store
            .get(DocumentKind::Flavor, &format!("f{i}"))
            .await
            .unwrap()
            .unwrap();
        if i % 2 == 0 {
            result.unwrap();
            assert_eq!((jobs.len(), stored.version), (1, 2), "writer {i}");
        } else {
            match result {
                Err(StoreError::VersionConflict { id, expected, .. }) => {
                    assert_eq!((id, expected), (format!("f{i}"), 7));
                }
                other => panic!("writer {i}: expected a conflict, got {other:?}"),
            }
            assert_eq!((jobs.len(), stored.version), (0, 1), "writer {i}");
        }
    }
}

/// The SQLite file holds secrets: it and its `-wal`/`-shm` files are owner-only whatever the
/// umask, and a file left world-readable by an older version is tightened on open.
#[tokio::test]
async fn sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let db = dir.path().join("klb.db");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let lb = lb(ProvisioningStatus::PendingCreate);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.commit().await.unwrap();
    for name in ["klb.db", "klb.db-wal", "klb.db-shm"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
    drop(store);

    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&format!("sqlite://{}?mode=rwc", old.display()))
        .await
        .unwrap();
    assert_eq!(mode("old.db"), 0o600);
}

/// A read through the store while every writer connection is inside a transaction answers
/// at once: creates read the quota limit inside their transaction, and with one shared pool
/// on PostgreSQL as many concurrent creates as connections waited for each other until the
/// acquire timeout (30 s).
#[tokio::test]
async fn reads_do_not_wait_for_busy_write_transactions() {
    let (store, db) = test_store().await;
    let lb = lb(ProvisioningStatus::Active);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.commit().await.unwrap();
    // SQLite has one writer connection; PostgreSQL's default pool has four.
    let writers = if db.is_postgres() {
        StoreOptions::new("").max_connections
    } else {
        1
    };
    let mut held = Vec::new();
    for _ in 0..writers {
        held.push(store.begin().await.unwrap());
    }
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        store.get(Kind::LoadBalancer, &lb.id.to_string()),
    )
    .await
    .expect("a read while all writers are busy answers within 5 s")
    .unwrap();
    assert!(read.is_some());
    drop(held);
}

/// A session PostgreSQL terminates (fast shutdown or restart: 57P01) is a retryable error, so
/// the API answers 503 rather than 500 while the database restarts.
#[tokio::test]
async fn a_terminated_postgres_session_is_retryable() {
    let Ok(url) = std::env::var("KLB_TEST_POSTGRES_URL") else {
        eprintln!("skipping PostgreSQL test: KLB_TEST_POSTGRES_URL is not set");
        return;
    };
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let source = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut conn)
        .await
        .expect_err("the session is terminated");
    assert_eq!(
        source.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57P01"),
        "{source}"
    );
    let err = StoreError::Query { op: "test", source };
    assert!(err.is_retryable());
}

#[tokio::test]
async fn counts_outside_and_inside_a_transaction_agree_and_skip_deleted() {
    let (store, _dir) = test_store().await;
    let lb = lb(ProvisioningStatus::Active);
    let live = pool(&lb, ProvisioningStatus::Active);
    let gone = pool(&lb, ProvisioningStatus::Deleted);
    let mut tx = store.begin().await.unwrap();
    tx.insert_resource(&lb).await.unwrap();
    tx.insert_resource(&live).await.unwrap();
    tx.insert_resource(&gone).await.unwrap();
    tx.commit().await.unwrap();
    let q = ListQuery {
        kind: Some(Kind::Pool.into()),
        project_id: Some(lb.project_id.clone()),
        ..Default::default()
    };
    assert_eq!(store.count(&q).await.unwrap(), 1);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.count(&q).await.unwrap(), 1);
    let other = ListQuery {
        project_id: Some("another".to_owned()),
        ..q.clone()
    };
    assert_eq!(store.count(&other).await.unwrap(), 0);
    let all = ListQuery {
        include_deleted: true,
        ..q
    };
    assert_eq!(tx.count(&all).await.unwrap(), 2);
}

#[tokio::test]
async fn graph_of_a_member_is_its_load_balancers_live_graph() {
    let (store, _dir) = test_store().await;
    let lb1 = lb(ProvisioningStatus::Active);
    let lb2 = lb(ProvisioningStatus::Active);
    let p1 = pool(&lb1, ProvisioningStatus::Active);
    let gone = pool(&lb1, ProvisioningStatus::Deleted);
    let m1 = member(&p1, ProvisioningStatus::Active);
    let p2 = pool(&lb2, ProvisioningStatus::Active);
    let mut tx = store.begin().await.unwrap();
    for l in [&lb1, &lb2] {
        tx.insert_resource(l).await.unwrap();
    }
    for p in [&p1, &gone, &p2] {
        tx.insert_resource(p).await.unwrap();
    }
    tx.insert_resource(&m1).await.unwrap();
    tx.commit().await.unwrap();
    let ids = |docs: Vec<Document>| {
        let mut v: Vec<String> = docs.into_iter().map(|d| d.id).collect();
        v.sort();
        v
    };
    let mut want = vec![lb1.id.to_string(), p1.id.to_string(), m1.id.to_string()];
    want.sort();
    let of_member = store
        .graph_of(Kind::Member, &m1.id.to_string())
        .await
        .unwrap();
    assert_eq!(ids(of_member), want);
    let of_lb = store
        .graph_of(Kind::LoadBalancer, &lb1.id.to_string())
        .await
        .unwrap();
    assert_eq!(ids(of_lb), want);
    assert_eq!(
        ids(store.graph(&lb1.id.to_string()).await.unwrap()),
        want,
        "the same documents as Store::graph"
    );
    let absent = Uuid::new_v4().to_string();
    assert!(
        store
            .graph_of(Kind::Member, &absent)
            .await
            .unwrap()
            .is_empty()
    );
    // A kind is part of the key: a pool id is no member.
    assert!(
        store
            .graph_of(Kind::Member, &p1.id.to_string())
            .await
            .unwrap()
            .is_empty()
    );
}

/// SQLite: a commit never checkpoints the WAL (the automatic checkpoint's fsyncs stalled the
/// single writer and every write queued behind it); the checkpointer task copies the WAL into
/// the database file on its own connection.
#[tokio::test]
async fn sqlite_wal_is_checkpointed_off_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("klb.db");
    let store = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let mut conn = store.inner.writer.acquire().await.unwrap();
    let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(auto, 0, "the writer must not checkpoint in its commits");
    drop(conn);
    let before = std::fs::metadata(&db).unwrap().len();
    for _ in 0..50 {
        let mut batch = WriteBatch::new();
        batch.insert(Document::from_resource(&lb(ProvisioningStatus::Active)).unwrap());
        store.apply(batch).await.unwrap();
    }
    // Far below SQLite's own 1000-page threshold: only the checkpointer moves these pages.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&db).unwrap().len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file did not grow from {before} bytes: no checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
