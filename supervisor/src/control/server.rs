//! The control API's HTTP side on actix-web (issue 15, item 4): the Unix socket and the
//! Prometheus port, served by one small actix system (one worker thread, an accept
//! thread and blocking threads on demand) beside the supervisor's synchronous run loop.
//!
//! The peer's uid is checked as a Unix connection is accepted, before actix reads a byte
//! of it: another user's connection is answered 403 by [`refuse`]. Limits (issue 17,
//! item 2): a request line and headers past actix-http's 128 KiB buffer (its
//! `MAX_BUFFER_SIZE`, 131,072 bytes) are answered 431 and not kept; a body past
//! [`MAX_BODY`] 413; a head not received within [`REQUEST_DEADLINE`] 408, and a body not received within it after the head 408; at most
//! [`MAX_CONNECTIONS`] connections are open at once (more wait in the listen backlog;
//! idle ones are closed at their deadline); at most [`MAX_IN_FLIGHT`] requests are being
//! answered at once (503 past it). One request per connection: the answer ends with the
//! connection's close, so clients read to the end.

use super::{route, text, Launcher, Registry};
use actix_http::{error::DispatchError, HttpService, KeepAlive, Protocol};
use actix_rt::net::UnixStream;
use actix_server::Server;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt as _};
use actix_web::{dev::AppConfig, http::StatusCode, web, App, HttpRequest, HttpResponse};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes of a request body (the largest request, `POST /apps`, is a few hundred).
pub const MAX_BODY: usize = 64 * 1024;
/// Time a client has from its connection to the last byte of its request head, and then
/// again to the last byte of its body.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections open at once, per listener (past it, new ones wait in the backlog).
pub const MAX_CONNECTIONS: usize = 1024;
/// Requests being answered at once (a restart or a start may take one for up to 30 s).
pub const MAX_IN_FLIGHT: usize = 64;
/// How long the rest of a refused connection is read and thrown away, so that it gets
/// the answer rather than a reset; also the time an answer may take to be written.
pub const LINGER: Duration = Duration::from_secs(2);

/// A request as the routes see it: method, target and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

/// What a listener's handler needs.
#[derive(Clone)]
struct Api {
    registry: Arc<Registry>,
    launcher: Option<Arc<dyn Launcher>>,
    /// The metrics port: only `GET /metrics`.
    metrics_only: bool,
    in_flight: Arc<AtomicUsize>,
}

/// One of [`MAX_IN_FLIGHT`] places, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_IN_FLIGHT).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An HTTP/1.1 service over `$api`'s handler, one request per connection, under the
/// deadlines above (a macro: the stream type differs between the two listeners).
macro_rules! http_service {
    ($api:expr) => {{
        let app = App::new()
            .app_data(web::Data::new($api))
            .default_service(web::to(handle));
        HttpService::build()
            .keep_alive(KeepAlive::Disabled)
            .client_request_timeout(REQUEST_DEADLINE)
            .client_disconnect_timeout(LINGER)
            .finish(map_config(
                app.into_factory()
                    .map_err(|e: actix_web::Error| e.error_response()),
                |_| AppConfig::default(),
            ))
    }};
}

/// Serve the control socket (its peers must have uid `uid`) and, when given, the metrics
/// port on a thread of their own until the process ends.
pub fn start(
    unix: std::os::unix::net::UnixListener,
    uid: u32,
    tcp: Option<std::net::TcpListener>,
    registry: Arc<Registry>,
    launcher: Option<Arc<dyn Launcher>>,
) -> std::io::Result<()> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let control = Api {
        registry,
        launcher,
        metrics_only: false,
        in_flight,
    };
    let metrics = Api {
        launcher: None,
        metrics_only: true,
        ..control.clone()
    };
    let mut builder = Server::build()
        .workers(1)
        .disable_signals()
        .max_concurrent_connections(MAX_CONNECTIONS)
        .listen_uds("smartpipe-control", unix, move || {
            fn_service(move |io: UnixStream| admit(io, uid))
                .and_then(http_service!(control.clone()))
        })?;
    if let Some(tcp) = tcp {
        builder = builder.listen("smartpipe-metrics", tcp, move || {
            http_service!(metrics.clone()).tcp()
        })?;
    }
    std::thread::Builder::new()
        .name("control-api".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            if let Err(e) = system.block_on(builder.run()) {
                tracing::error!("control API: the server stopped: {e}");
            }
        })?;
    Ok(())
}

/// Pass a connection of user `uid` on to HTTP; answer any other 403 and drop it.
async fn admit(
    io: UnixStream,
    uid: u32,
) -> Result<(UnixStream, Protocol, Option<SocketAddr>), DispatchError> {
    match io.peer_cred() {
        Ok(cred) if cred.uid() == uid => Ok((io, Protocol::Http1, None)),
        _ => {
            refuse(io).await;
            Err(DispatchError::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "a connection of another user",
            )))
        }
    }
}

/// Answer 403 before reading anything, then read and discard what the client still
/// sends for [`LINGER`].
async fn refuse(mut io: UnixStream) {
    let why = "this supervisor belongs to another user\n";
    let answer = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{why}",
        why.len()
    );
    let linger = async {
        io.write_all(answer.as_bytes()).await?;
        io.shutdown().await?;
        let mut chunk = [0u8; 8192];
        while io.read(&mut chunk).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, linger).await;
}

/// Every request of both listeners.
async fn handle(req: HttpRequest, payload: web::Payload, api: web::Data<Api>) -> HttpResponse {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if api.metrics_only {
        return if req.method() == actix_web::http::Method::GET && target == "/metrics" {
            answer((200, "text/plain; version=0.0.4", api.registry.metrics()))
        } else {
            answer(text(404, "only GET /metrics here\n"))
        };
    }
    // A declared length past the limit is refused before the body is waited for.
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return answer(text(413, "request body too large"));
    }
    let body =
        match tokio::time::timeout(REQUEST_DEADLINE, payload.to_bytes_limited(MAX_BODY)).await {
            Err(_) => return answer(text(408, "the request was not sent in time")),
            Ok(Err(_)) => return answer(text(413, "request body too large")),
            Ok(Ok(Err(e))) => return answer(text(400, format!("the request body: {e}"))),
            Ok(Ok(Ok(body))) => body.to_vec(),
        };
    let Some(slot) = Slot::take(&api.in_flight) else {
        return answer(text(503, "the control API is busy: try again"));
    };
    let request = Request {
        method: req.method().as_str().to_string(),
        target,
        body,
    };
    let api = api.into_inner();
    // Routes may wait (a restart up to 30 s, a start while the app is admitted).
    let answered = web::block(move || {
        let _slot = slot;
        // The answer to a start must reach its client before the supervisor may exit.
        let _busy = (request.target == "/apps").then(|| api.registry.busy());
        route(&request, &api.registry, api.launcher.as_deref())
    })
    .await;
    match answered {
        Ok(reply) => answer(reply),
        Err(e) => answer(text(500, format!("the request was not answered: {e}"))),
    }
}

fn answer((code, ctype, body): (u16, &'static str, String)) -> HttpResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).content_type(ctype).body(body)
}

#[cfg(test)]
mod tests {
    use super::super::{serve, Registry};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    /// Send `raw` on a fresh connection and read the answer to its end (the server closes
    /// every connection after one answer, so this returns without a timeout).
    fn exchange(sock: &std::path::Path, raw: &[u8]) -> String {
        let mut conn = UnixStream::connect(sock).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        conn.write_all(raw).expect("write");
        let mut answer = Vec::new();
        // The server may close while we still send (a refused body): keep what came.
        let _ = conn.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).to_string()
    }

    #[test]
    fn the_socket_answers_within_its_limits_and_closes_each_connection() {
        let dir = std::env::temp_dir().join(format!("smartpipe-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("runtime dir");
        let sock = serve(&dir, Arc::new(Registry::new(false)), None, None).expect("serve");
        let status = exchange(&sock, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
        let too_big = format!(
            "POST /apps/x/rate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            super::MAX_BODY + 1
        );
        let too_big = exchange(&sock, too_big.as_bytes());
        let bad_length = exchange(
            &sock,
            b"POST /stop HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        );
        let nowhere = exchange(&sock, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(status.contains("\"daemon\":false"), "{status}");
        assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
        assert!(too_big.contains("request body too large"), "{too_big}");
        assert!(bad_length.starts_with("HTTP/1.1 400"), "{bad_length}");
        assert!(nowhere.starts_with("HTTP/1.1 404"), "{nowhere}");
        assert!(nowhere.contains("routes: GET /status"), "{nowhere}");
    }
}
