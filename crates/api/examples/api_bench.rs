//! Quick in-process API throughput check: serves the router on a loopback port with a temp
//! SQLite store and the noop provider, then drives it with 8 concurrent HTTP clients
//! (create LBs, show, list 200). Bounded in count. Usage:
//! `cargo run --release -p klb-api --example api_bench [creates] [shows] [lists]`.

use std::sync::Arc;
use std::time::Instant;

use klb_api::{AppState, NoAuth};

const CLIENTS: usize = 8;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n_create, n_show, n_list) = (
        args.first().copied().unwrap_or(2000),
        args.get(1).copied().unwrap_or(20000),
        args.get(2).copied().unwrap_or(2000),
    );
    let db = klb_test_support::db::TestDb::sqlite();
    let url = std::env::var("KLB_BENCH_DB").unwrap_or_else(|_| db.url().to_owned());
    let store = klb_store::Store::open(&url).await.unwrap();
    let state = AppState::new(
        store.clone(),
        Arc::new(NoAuth {
            default_project_id: Some("bench".into()),
        }),
    );
    tokio::spawn(klb_api::provider::NoopProvider::new(store).run(std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(klb_api::serve(listener, state, std::future::pending()));
    let client = reqwest::Client::new();

    let ids = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let t = Instant::now();
    let (client2, base2, ids2) = (client.clone(), base.clone(), ids.clone());
    run(n_create, move |i| {
        let (client, base, ids) = (&client2, &base2, &ids2);
        let (c, base, ids) = (client.clone(), base.clone(), ids.clone());
        async move {
            let body = serde_json::json!({"loadbalancer": {"vip_subnet_id": "8a3a5b41-4f0d-4a1b-9f2f-3a6c4e5d6f70", "name": format!("lb{i}")}});
            let r = c.post(format!("{base}/v2/lbaas/loadbalancers")).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 201);
            let v: serde_json::Value = r.json().await.unwrap();
            ids.lock().await.push(v["loadbalancer"]["id"].as_str().unwrap().to_owned());
        }
    })
    .await;
    report("create", n_create, t);
    let ids = Arc::new(ids.lock().await.clone());
    let t = Instant::now();
    let (client2, base2, ids2) = (client.clone(), base.clone(), ids.clone());
    run(n_show, move |i| {
        let (client, base, ids) = (&client2, &base2, &ids2);
        let (c, base, ids) = (client.clone(), base.clone(), ids.clone());
        async move {
            let r = c
                .get(format!(
                    "{base}/v2/lbaas/loadbalancers/{}",
                    ids[i % ids.len()]
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    })
    .await;
    report("show", n_show, t);
    let t = Instant::now();
    let (client2, base2) = (client.clone(), base.clone());
    run(n_list, move |_| {
        let (client, base) = (&client2, &base2);
        let (c, base) = (client.clone(), base.clone());
        async move {
            let r = c
                .get(format!("{base}/v2/lbaas/loadbalancers?limit=200"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    })
    .await;
    report("list200", n_list, t);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
    {
        println!("{line} (server and clients in one process)");
    }
}

async fn run<F, Fut>(n: usize, f: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn report(what: &str, n: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!("{what}: {n} in {s:.2}s = {:.0}/s", n as f64 / s);
}
