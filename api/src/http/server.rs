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
//! - On shutdown, no new connection is accepted, kept-alive connections are closed after their
//!   current request, and requests in flight get the grace period.

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

/// Serves `app` on `listener` until `shutdown` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    app: impl IntoEndpoint<Endpoint: 'static>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app: Arc<dyn poem::endpoint::DynEndpoint<Output = poem::Response>> =
        Arc::new(poem::endpoint::ToDynEndpoint(app.into_endpoint().map_to_response()));
    let local = listener.local_addr()?;
    let counts = ConnectionCounts::default();
    let connections = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
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
        connections.spawn(serve_connection(socket, local, peer, app.clone(), limits, shutdown.clone(), slot));
    }
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
    shutdown: CancellationToken,
    _slot: ConnectionSlot,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        async move {
            let request: poem::Request = (
                request,
                LocalAddr(poem::Addr::SocketAddr(local)),
                RemoteAddr(poem::Addr::SocketAddr(peer)),
                poem::http::uri::Scheme::HTTP,
            )
                .into();
            Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, std::io::Error>>::from(
                app.get_response(request).await,
            ))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = shutdown.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
