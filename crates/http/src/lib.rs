//! The one HTTP/1.1 server loop every klb service runs: the Load Balancer API (`klb serve`),
//! the heartbeat receiver with the alarm webhook, and the LB VM agent's mTLS API.
//!
//! Why not `axum::serve`: it has no header-read timeout, no connection limit and, on
//! `EMFILE`, logs and sleeps one second per error while the backlog fills. A few thousand
//! clients that send half a request line and stall then hold every descriptor and the
//! memory of their connections, and normal requests time out (issue 11 §3). Here:
//!
//! - the TLS handshake (when there is one) must finish within [`Limits::handshake_timeout`];
//! - the request head must arrive within [`Limits::header_read_timeout`]; hyper starts this
//!   timer whenever the connection waits for a head, so it also closes idle keep-alive
//!   connections;
//! - the soft descriptor limit is raised to the hard one, and at most
//!   [`Limits::max_connections`] connections (fewer if the descriptors do not allow them)
//!   are open; one more is accepted and closed
//!   at once (the client sees a reset now instead of waiting in the backlog behind stalled
//!   connections), and accept errors (`EMFILE`) back off instead of spinning;
//! - on shutdown the listener closes, open connections finish their request and close, and
//!   after [`Limits::shutdown_grace`] the rest are dropped.
//!
//! - a request body must arrive within [`Limits::body_read_timeout`] of its head.
//!
//! Request body sizes are bounded by each router (`DefaultBodyLimit`). HTTP/1.1 only: every
//! client of these listeners (OpenStack SDKs and CLIs, reqwest in klb) speaks it, and
//! `axum::serve`'s cleartext HTTP/2 was never used.
//!
//! **Invariant:** no klb dependency, so the agent can use it and still ship alone.

#![warn(missing_docs)]
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// What one server tolerates from its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time for a client to send a request's head (line and headers), counted from when the
    /// connection starts waiting for it: after accept, and after each response on a
    /// keep-alive connection (so it is the idle timeout too).
    pub header_read_timeout: Duration,
    /// Time for a request's body to arrive, counted from its complete head: a client that
    /// trickles a body cannot hold a connection (and the buffered part of the body) longer.
    pub body_read_timeout: Duration,
    /// Time for the TLS handshake (servers with a handshake only).
    pub handshake_timeout: Duration,
    /// Open connections at most; one more is closed right after accept.
    pub max_connections: usize,
    /// On shutdown, how long open connections may take to finish.
    pub shutdown_grace: Duration,
    /// Descriptors kept for everything else (store, files, outgoing calls): the server raises
    /// the soft descriptor limit to the hard one, then lowers `max_connections` to fit
    /// ([`Limits::fit_descriptors`]).
    pub reserve_descriptors: u64,
}

impl Limits {
    /// The Load Balancer API: tenants' CLIs and SDKs, behind at most a proxy. 4,096
    /// connections keep the worst case near 64 MiB of buffers; 10 s is generous for a
    /// request head on any network that can use the API.
    pub const API: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        handshake_timeout: Duration::from_secs(10),
        max_connections: 4096,
        shutdown_grace: Duration::from_secs(10),
        reserve_descriptors: 1024,
    };

    /// The heartbeat receiver and alarm webhook: LB VMs and the alarm evaluator, each sending
    /// a small request every few seconds.
    pub const INTERNAL: Limits = Limits {
        header_read_timeout: Duration::from_secs(5),
        body_read_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(5),
        max_connections: 1024,
        shutdown_grace: Duration::from_secs(5),
        reserve_descriptors: 256,
    };

    /// The LB VM agent: only the control plane calls it, over mTLS, but anyone on the
    /// management network can open connections; room for a few hundred stalled handshakes
    /// (each costs a socket and a few KiB until its timeout) beside the control plane's.
    pub const AGENT: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(5),
        max_connections: 1024,
        shutdown_grace: Duration::from_secs(5),
        reserve_descriptors: 256,
    };

    /// These limits with `max_connections` lowered so the open connections fit in the
    /// process's descriptor limit with `reserve` descriptors to spare (store, files, clients;
    /// at most half the limit is reserved).
    pub fn fit_descriptors(mut self, soft_nofile: Option<u64>, reserve: u64) -> Limits {
        if let Some(nofile) = soft_nofile {
            let reserve = reserve.min(nofile / 2);
            let fit = usize::try_from(nofile.saturating_sub(reserve)).unwrap_or(usize::MAX);
            self.max_connections = self.max_connections.min(fit.max(16));
        }
        self
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd and most shells start services
/// at 1,024, far below what a server with a connection limit of thousands needs; the hard
/// limit is the administrator's choice). Returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(err) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %err, "cannot raise the descriptor limit to the hard limit");
        }
    }
    soft_nofile()
}

/// The soft `RLIMIT_NOFILE` of this process (from `/proc/self/limits`), if readable.
pub fn soft_nofile() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `app` over plain HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with(listener, plain, app, limits, shutdown).await
}

async fn plain(stream: TcpStream) -> io::Result<TcpStream> {
    Ok(stream)
}

/// Serves `app` on `listener` until `shutdown` resolves, each connection first going through
/// `handshake` (e.g. a TLS accept), which must finish within [`Limits::handshake_timeout`].
pub async fn serve_with<H, F, IO>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    H: Fn(TcpStream) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = io::Result<IO>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = limits.fit_descriptors(raise_nofile_limit(), limits.reserve_descriptors);
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut refused = Throttled::new("connection limit reached: closing new connections");
    let mut accept_failed = Throttled::new("accept failed: backing off");
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) if is_per_connection(&err) => continue,
                Err(err) => {
                    // EMFILE/ENFILE/ENOBUFS: the pending connection stays in the backlog;
                    // wait for descriptors to come back instead of spinning on the error.
                    accept_failed.warn(&err, max - permits.available_permits());
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.warn(&"max_connections", max);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handshake = handshake.clone();
        let app = app.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let io = match tokio::time::timeout(limits.handshake_timeout, handshake(stream)).await {
                Ok(Ok(io)) => io,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("handshake timed out");
                    return;
                }
            };
            // The request head is read into a small buffer first: a connection that never
            // completes its head costs a few hundred bytes instead of hyper's 8 KiB read
            // buffer, so thousands of stalled clients neither grow the heap much nor leave
            // it fragmented after they go.
            let io = match tokio::time::timeout(limits.header_read_timeout, read_head(io)).await {
                Ok(Ok(io)) => io,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "connection closed before a request head");
                    return;
                }
                Err(_) => {
                    tracing::debug!("request head timed out");
                    return;
                }
            };
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                app,
                move |req: hyper::Request<Incoming>| {
                    req.map(|body| with_deadline(body, limits.body_read_timeout))
                },
            ));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "connection closed with an error");
                    }
                }
                // The flag only ever turns true, so any change is the shutdown.
                _ = closing.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection holds a permit: all permits back means all connections are done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = max - permits.available_permits(),
            "connections still open after the shutdown grace period: dropped"
        );
    }
    Ok(())
}

/// A request body that fails once `timeout` has passed (bodies known to be empty are passed
/// as they are).
fn with_deadline(body: Incoming, timeout: Duration) -> axum::body::Body {
    use hyper::body::Body as _;
    if body.is_end_stream() {
        return axum::body::Body::new(body);
    }
    axum::body::Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(timeout)),
    })
}

/// See [`with_deadline`].
struct DeadlineBody {
    inner: Incoming,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body timed out")
    }
}

impl std::error::Error for BodyTimedOut {}

impl hyper::body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if let Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The most of a request head [`read_head`] buffers before handing the connection to hyper
/// (which then reads the rest, up to its own limit).
const HEAD_PREFIX_MAX: usize = 8 * 1024;

/// Reads from `io` until the first request head is complete (an empty line), the prefix
/// reaches [`HEAD_PREFIX_MAX`], or the client closes; returns `io` with what was read put back
/// in front. The buffer starts at 256 bytes and grows only as data arrives.
async fn read_head<IO: AsyncRead + Unpin>(mut io: IO) -> io::Result<Prefixed<IO>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // Look for the blank line also across the previous chunk's end.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        let tail = &head[from..];
        let done = tail.windows(4).any(|w| w == b"\r\n\r\n")
            || tail.windows(2).any(|w| w == b"\n\n")
            || head.len() >= HEAD_PREFIX_MAX;
        if done {
            head.shrink_to_fit();
            return Ok(Prefixed {
                prefix: head,
                pos: 0,
                io,
            });
        }
    }
}

/// An I/O stream with bytes already read from it put back in front.
struct Prefixed<IO> {
    prefix: Vec<u8>,
    pos: usize,
    io: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                // Done with it: give the memory back.
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Accept errors about one connection (it was reset before we took it): not a reason to back
/// off.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A warning logged at most once per 10 s, with the number of events it stands for, so an
/// attack cannot turn into a log flood.
struct Throttled {
    message: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn new(message: &'static str) -> Throttled {
        Throttled {
            message,
            last: None,
            suppressed: 0,
        }
    }

    fn warn(&mut self, cause: &dyn std::fmt::Display, open: usize) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(cause = %cause, open, suppressed = self.suppressed, "{}", self.message);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests;
