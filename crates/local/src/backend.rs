//! `klb backend`: a tiny HTTP/1.1 server used as a load-balancer member in the local cloud and
//! in tests. Every answer names the member (body and `X-Backend` header) so a client can count
//! how traffic was split; `/health` answers `ok` for HAProxy health checks.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::info;

use crate::error::{LocalError, Result};

/// Header naming the member that answered.
pub const BACKEND_HEADER: &str = "x-backend";

/// The backend's router (separate from [`serve`] so it can be tested without a socket).
/// `name` must be a valid header value (checked by [`serve`]).
pub fn router(name: HeaderValue) -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(hello)
        .with_state(name)
}

async fn health(State(name): State<HeaderValue>) -> Response {
    ([(BACKEND_HEADER, name)], "ok\n").into_response()
}

async fn hello(State(name): State<HeaderValue>) -> Response {
    let body = format!("hello from {}\n", name.to_str().unwrap_or("?"));
    (StatusCode::OK, [(BACKEND_HEADER, name)], body).into_response()
}

/// Checks the name: 1-64 printable ASCII characters (it goes into a header and a body).
pub fn check_name(name: &str) -> Result<HeaderValue> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LocalError::InvalidName {
            name: name.into(),
            reason: "a backend name is 1-64 printable ASCII characters without spaces",
        });
    }
    HeaderValue::from_str(name).map_err(|_| LocalError::InvalidName {
        name: name.into(),
        reason: "not a valid header value",
    })
}

/// Binds `listen` and serves until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    name: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let value = check_name(name)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| LocalError::io(format!("bind {listen}"), e))?;
    info!(%listen, name, "backend listening");
    axum::serve(listener, router(value))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| LocalError::io(format!("serve {listen}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("m1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("x\r\nInjected: 1").is_err());
    }

    #[tokio::test]
    async fn answers_with_its_name_over_tcp() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let server = tokio::spawn(serve(addr, "m7", async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::new();
        let mut resp = None;
        for _ in 0..50 {
            match client.get(format!("http://{addr}/x")).send().await {
                Ok(r) => {
                    resp = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let r = resp.expect("backend answered");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[BACKEND_HEADER], "m7");
        assert_eq!(r.text().await.unwrap(), "hello from m7\n");
        let h = client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
