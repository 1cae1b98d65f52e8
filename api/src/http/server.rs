//! The HTTP/1.1 server loop under the poem application, in place of `poem::Server`, which has no
//! header-read timeout and no per-client connection bound: a client that opens connections and
//! sends nothing (or half a request line) would hold them forever.
//!
//! - Request headers (and the wait for the next request on a kept-alive connection) must arrive
//!   within `LEVELUP_API_HEADER_TIMEOUT_SECS`, else hyper closes the connection.
//! - Request bodies are read by [`crate::http::guard`] within `LEVELUP_API_BODY_TIMEOUT_SECS`, before a
//!   request takes a handler slot, so slow senders cannot exhaust the slots.
//! - One client address holds at most `LEVELUP_API_MAX_CONNECTIONS_PER_CLIENT` connections; more
//!   are closed at once.
//! - Shutdown has two phases ([`Lifecycle`]). Draining (from SIGTERM, `LEVELUP_DRAIN_SECS`):
//!   connections are still accepted and every request is served, but each response carries
//!   `Connection: close`, so a load balancer never reuses a connection that is about to go away
//!   (and `/readyz` answers 503, so it stops routing here). Stopping: the listener is closed (new
//!   connections are refused at once, which a proxy retries elsewhere, rather than left waiting in
//!   the backlog), idle kept-alive connections are closed, busy ones after their current
//!   response, and requests in flight get `LEVELUP_SHUTDOWN_GRACE_SECS`.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use levelup_common::runtime::shutdown::CancellationToken;
use poem::{
    Endpoint, EndpointExt, IntoEndpoint,
    http::{HeaderValue, header::CONNECTION},
    web::{LocalAddr, RemoteAddr},
};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLimits {
    pub header_timeout: Duration,
    pub max_connections_per_client: usize,
    pub shutdown_grace: Duration,
}

/// The two phases of a server's shutdown; see the module documentation.
#[derive(Clone)]
pub(crate) struct Lifecycle {
    /// Still serving, but closing each connection after its response.
    pub(crate) draining: CancellationToken,
    /// No new connections; finishing the requests in flight.
    pub(crate) stopping: CancellationToken,
}

impl Lifecycle {
    /// Follows `shutdown`: when it is cancelled, cancels `draining`, waits `drain_period`, then
    /// stops.
    pub(crate) fn after(shutdown: CancellationToken, draining: CancellationToken, drain_period: Duration) -> Self {
        let lifecycle = Self { draining, stopping: CancellationToken::new() };
        let phases = lifecycle.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            phases.draining.cancel();
            if !drain_period.is_zero() {
                tracing::info!(?drain_period, "draining: /readyz answers 503, requests are still served");
                tokio::time::sleep(drain_period).await;
            }
            tracing::info!("no longer accepting connections; finishing the requests in flight");
            phases.stopping.cancel();
        });
        lifecycle
    }
}

/// Open connections per client address; a slot is given back when its [`ConnectionSlot`] drops.
#[derive(Clone, Default)]
struct ConnectionCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct ConnectionSlot {
    counts: ConnectionCounts,
    ip: IpAddr,
}

impl ConnectionCounts {
    fn take(&self, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut counts = self.0.lock().expect("connection counts lock");
        let count = counts.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { counts: self.clone(), ip })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().expect("connection counts lock");
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `lifecycle` stops, then waits for the requests in flight
/// (at most the grace period).
pub(crate) async fn serve(
    listener: TcpListener,
    app: impl IntoEndpoint<Endpoint: 'static>,
    limits: ServerLimits,
    lifecycle: Lifecycle,
) -> std::io::Result<()> {
    let app: Arc<dyn poem::endpoint::DynEndpoint<Output = poem::Response>> =
        Arc::new(poem::endpoint::ToDynEndpoint(app.into_endpoint().map_to_response()));
    let local = listener.local_addr()?;
    let counts = ConnectionCounts::default();
    let connections = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            () = lifecycle.stopping.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = counts.take(peer.ip(), limits.max_connections_per_client) else {
            ::metrics::counter!("levelup_http_connections_refused_total").increment(1);
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        connections.spawn(serve_connection(socket, local, peer, app.clone(), limits, lifecycle.clone(), slot));
    }
    // Refuse new connections now: left in the backlog they would wait, then be reset.
    drop(listener);
    connections.close();
    if tokio::time::timeout(limits.shutdown_grace, connections.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over with requests still in flight");
    }
    Ok(())
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    app: Arc<dyn poem::endpoint::DynEndpoint<Output = poem::Response>>,
    limits: ServerLimits,
    lifecycle: Lifecycle,
    _slot: ConnectionSlot,
) {
    let draining = lifecycle.draining.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        let draining = draining.clone();
        async move {
            let request: poem::Request = (
                request,
                LocalAddr(poem::Addr::SocketAddr(local)),
                RemoteAddr(poem::Addr::SocketAddr(peer)),
                poem::http::uri::Scheme::HTTP,
            )
                .into();
            let mut response = app.get_response(request).await;
            if draining.is_cancelled() {
                // hyper closes the connection after a response that says so.
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, std::io::Error>>::from(response))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = lifecycle.stopping.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
