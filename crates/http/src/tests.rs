use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::*;

const FAST: Limits = Limits {
    header_read_timeout: Duration::from_millis(300),
    body_read_timeout: Duration::from_millis(500),
    handshake_timeout: Duration::from_millis(300),
    max_connections: 4,
    shutdown_grace: Duration::from_secs(2),
    reserve_descriptors: 0,
};

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Server {
    async fn start(limits: Limits) -> Server {
        Server::start_with(limits, false).await
    }

    /// `stall_handshake`: the handshake waits forever (a TLS client that never says hello).
    async fn start_with(limits: Limits, stall_handshake: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = if stall_handshake {
            let handshake = |s: TcpStream| async move {
                std::future::pending::<()>().await;
                Ok(s)
            };
            tokio::spawn(serve_with(listener, handshake, app, limits, shutdown))
        } else {
            tokio::spawn(serve(listener, app, limits, shutdown))
        };
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("server stops within the grace period")
            .unwrap()
            .unwrap();
    }
}

/// Sends a whole GET on a new connection; the response text.
async fn get_ok(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .expect("answered within 2 s")
        .unwrap();
    out
}

/// How long until the server closes `s` (EOF or reset), waiting at most `limit`.
async fn closed_after(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_timeout() {
    let server = Server::start(FAST).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET / HT").await.unwrap();
    let t = closed_after(&mut slow, Duration::from_secs(5))
        .await
        .expect("stalled connection closed");
    assert!(t >= Duration::from_millis(250), "closed too early: {t:?}");
    // An idle keep-alive connection is closed the same way after its response.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    assert!(
        closed_after(&mut idle, Duration::from_secs(5))
            .await
            .is_some()
    );
    server.stop().await;
}

#[tokio::test]
async fn beyond_the_limit_connections_are_closed_and_service_resumes() {
    let server = Server::start(Limits {
        header_read_timeout: Duration::from_secs(30),
        ..FAST
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..FAST.max_connections {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /").await.unwrap();
        stalled.push(s);
    }
    // Give the server time to accept them all (each takes a permit).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let t = closed_after(&mut extra, Duration::from_secs(2))
        .await
        .expect("connection over the limit is closed at once");
    assert!(t < Duration::from_secs(1), "{t:?}");
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get_ok(server.addr).await.contains("200 OK"));
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_after_the_timeout() {
    let server = Server::start_with(FAST, true).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let t = closed_after(&mut s, Duration::from_secs(5))
        .await
        .expect("stalled handshake closed");
    assert!(t >= Duration::from_millis(250), "{t:?}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_within_the_grace_period_despite_stalled_clients() {
    let server = Server::start(Limits {
        header_read_timeout: Duration::from_secs(60),
        ..FAST
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET").await.unwrap();
    assert!(get_ok(server.addr).await.contains("ok"));
    let start = Instant::now();
    server.stop().await;
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn connection_limit_fits_the_descriptor_limit() {
    assert_eq!(
        Limits::API.fit_descriptors(Some(1024), 256).max_connections,
        768
    );
    assert_eq!(
        Limits::API
            .fit_descriptors(Some(1 << 20), 256)
            .max_connections,
        4096
    );
    assert_eq!(Limits::API.fit_descriptors(None, 256).max_connections, 4096);
    assert_eq!(
        Limits::API.fit_descriptors(Some(100), 256).max_connections,
        50
    );
    assert_eq!(
        Limits::API.fit_descriptors(Some(20), 256).max_connections,
        16
    );
    let before = soft_nofile().unwrap();
    assert!(raise_nofile_limit().is_some_and(|n| n >= before));
}

#[tokio::test]
async fn a_head_in_pieces_and_a_body_are_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { format!("got {body}") }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, FAST, async {
        let _ = stopped.await;
    }));
    let mut s = TcpStream::connect(addr).await.unwrap();
    for piece in [
        &b"POST /echo HTTP/1.1\r"[..],
        b"\nhost: x\r\ncontent-length: 5\r\n",
        b"connection: close\r\n\r",
        b"\nhel",
        b"lo",
    ] {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("got hello"), "{out}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_trickled_body_fails_after_the_body_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/echo",
        axum::routing::post(|body: String| async move { format!("got {body}") }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, FAST, async {
        let _ = stopped.await;
    }));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc")
        .await
        .unwrap();
    let start = Instant::now();
    let mut out = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut out))
        .await
        .expect("answered once the body timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]).into_owned();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert!(closed_after(&mut s, Duration::from_secs(3)).await.is_some());
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
