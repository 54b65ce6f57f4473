//! The control API's HTTP/1.1 server, with limits (issue 17, item 2): one reader thread
//! reads every connection's request without blocking (`poll`), so idle or slow clients
//! cost a socket and a small buffer, not a thread; a fixed pool of worker threads answers
//! complete requests from a bounded queue.
//!
//! Limits: [`MAX_HEADER_BYTES`] of request line and headers (431 past it), [`MAX_BODY`]
//! bytes of body (413), [`REQUEST_DEADLINE`] to send the whole request (408),
//! [`MAX_PENDING`] connections being read at once (the longest waiting one is closed to
//! take a new one), [`QUEUE`] complete requests waiting for a worker (503 past it). A
//! connection refused by `admit` (the control socket's peer uid check, made at accept) is
//! answered 403 before a byte of it is read. After an error answer the rest of what the
//! client sends is read and discarded for [`LINGER`], so that it gets the answer rather
//! than a reset. No thread is started per connection and nothing here panics.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most bytes of request line and headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most bytes of a request body (the largest request, `POST /apps`, is a few hundred).
pub const MAX_BODY: usize = 64 * 1024;
/// Time a client has from its connection to the last byte of its request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Connections whose request is being read at once.
pub const MAX_PENDING: usize = 256;
/// Complete requests waiting for a free worker.
pub const QUEUE: usize = 64;
/// How long the rest of a refused request is read and thrown away.
pub const LINGER: Duration = Duration::from_secs(2);
/// Time an answer may take to be written.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request as read: method, target and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

/// A stream the server can serve.
pub trait Conn: Read + Write + AsRawFd + Send + 'static {
    fn nonblocking(&self, on: bool) -> std::io::Result<()>;
    fn write_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    fn shutdown_write(&self);
}

/// A listener the server accepts from.
pub trait Listen: AsRawFd + Send + 'static {
    type C: Conn;
    fn accept_conn(&self) -> std::io::Result<Self::C>;
    fn nonblocking(&self, on: bool) -> std::io::Result<()>;
}

macro_rules! impl_conn {
    ($stream:ty, $listener:ty) => {
        impl Conn for $stream {
            fn nonblocking(&self, on: bool) -> std::io::Result<()> {
                self.set_nonblocking(on)
            }
            fn write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
                self.set_write_timeout(t)
            }
            fn shutdown_write(&self) {
                let _ = self.shutdown(Shutdown::Write);
            }
        }
        impl Listen for $listener {
            type C = $stream;
            fn accept_conn(&self) -> std::io::Result<$stream> {
                self.accept().map(|(c, _)| c)
            }
            fn nonblocking(&self, on: bool) -> std::io::Result<()> {
                self.set_nonblocking(on)
            }
        }
    };
}
impl_conn!(UnixStream, UnixListener);
impl_conn!(TcpStream, TcpListener);

/// What answers a complete request: (status, content type, body).
pub type Handler<C> = Arc<dyn Fn(&C, &Request) -> (u16, &'static str, String) + Send + Sync>;
/// Checked at accept, before anything is read: false answers 403 with `refusal`.
pub type Admit<C> = Box<dyn Fn(&C) -> bool + Send>;

/// Serve `listener` on a reader thread and `workers` worker threads until the process ends.
pub fn serve<L: Listen>(
    name: &str,
    listener: L,
    workers: usize,
    admit: Admit<L::C>,
    refusal: &'static str,
    handler: Handler<L::C>,
) -> std::io::Result<()> {
    listener.nonblocking(true)?;
    let (tx, rx) = sync_channel::<(L::C, Request)>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for k in 0..workers.max(1) {
        let (rx, handler) = (rx.clone(), handler.clone());
        std::thread::Builder::new()
            .name(format!("{name}-{k}"))
            .spawn(move || work(&rx, &*handler))?;
    }
    std::thread::Builder::new()
        .name(format!("{name}-reader"))
        .spawn(move || {
            Reader {
                listener,
                admit,
                refusal,
                queue: tx,
                pending: Vec::new(),
                lingering: Vec::new(),
            }
            .run()
        })?;
    Ok(())
}

fn work<C: Conn>(
    rx: &Mutex<Receiver<(C, Request)>>,
    handler: &(dyn Fn(&C, &Request) -> (u16, &'static str, String) + Send + Sync),
) {
    loop {
        // A poisoned lock still guards a usable receiver.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((mut conn, req)) = next else { return };
        if conn.nonblocking(false).is_err() {
            continue;
        }
        let _ = conn.write_timeout(Some(WRITE_TIMEOUT));
        let (code, ctype, body) = handler(&conn, &req);
        respond(&mut conn, code, ctype, &body);
        conn.shutdown_write();
    }
}

/// A connection whose request is being read.
struct Pending<C> {
    conn: C,
    buf: Vec<u8>,
    since: Instant,
}

enum Progress {
    More,
    Done(Request),
    Refuse(u16, &'static str),
    Gone,
}

struct Reader<L: Listen> {
    listener: L,
    admit: Admit<L::C>,
    refusal: &'static str,
    queue: SyncSender<(L::C, Request)>,
    pending: Vec<Pending<L::C>>,
    /// Refused connections whose input is discarded until their time is up.
    lingering: Vec<(L::C, Instant)>,
}

impl<L: Listen> Reader<L> {
    fn run(mut self) {
        loop {
            let mut fds = Vec::with_capacity(1 + self.pending.len() + self.lingering.len());
            let pollin = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            fds.push(pollin(self.listener.as_raw_fd()));
            fds.extend(self.pending.iter().map(|p| pollin(p.conn.as_raw_fd())));
            fds.extend(self.lingering.iter().map(|l| pollin(l.0.as_raw_fd())));
            // SAFETY: `fds` is a valid array of pollfd of the length given.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 250) };
            if n < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
                tracing::warn!(
                    "control API: poll failed: {}",
                    std::io::Error::last_os_error()
                );
            }
            let ready = |k: usize| fds.get(k).is_some_and(|f| f.revents != 0);
            let np = self.pending.len();
            // Back to front, so that removing one keeps the others' indexes.
            for k in (0..self.lingering.len()).rev() {
                if ready(1 + np + k) && !discard(&mut self.lingering[k].0) {
                    self.lingering.swap_remove(k);
                }
            }
            for k in (0..np).rev() {
                if ready(1 + k) {
                    self.advance(k);
                }
            }
            self.expire();
            if ready(0) {
                self.accept_all();
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept_conn() {
                Ok(conn) => {
                    if conn.nonblocking(true).is_err() {
                        continue;
                    }
                    if !(self.admit)(&conn) {
                        self.refuse(conn, 403, self.refusal);
                        continue;
                    }
                    if self.pending.len() >= MAX_PENDING {
                        // The connection that has waited longest without a request goes.
                        let oldest = self.pending.remove(0);
                        self.refuse(oldest.conn, 503, "too many connections at once\n");
                    }
                    self.pending.push(Pending {
                        conn,
                        buf: Vec::new(),
                        since: Instant::now(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors, most likely: free one, try again later.
                    tracing::warn!("control API: cannot accept a connection: {e}");
                    if self.lingering.pop().is_none() && !self.pending.is_empty() {
                        self.pending.remove(0);
                    }
                    return;
                }
            }
        }
    }

    fn advance(&mut self, k: usize) {
        match read_some(&mut self.pending[k]) {
            Progress::More => {}
            Progress::Gone => {
                self.pending.swap_remove(k);
            }
            Progress::Refuse(code, why) => {
                let p = self.pending.swap_remove(k);
                self.refuse(p.conn, code, why);
            }
            Progress::Done(req) => {
                let p = self.pending.swap_remove(k);
                match self.queue.try_send((p.conn, req)) {
                    Ok(()) => {}
                    Err(TrySendError::Full((conn, _)) | TrySendError::Disconnected((conn, _))) => {
                        self.refuse(conn, 503, "the control API is busy: try again\n")
                    }
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let mut k = 0;
        while k < self.pending.len() {
            if now.duration_since(self.pending[k].since) > REQUEST_DEADLINE {
                let p = self.pending.swap_remove(k);
                self.refuse(p.conn, 408, "the request was not sent in time\n");
            } else {
                k += 1;
            }
        }
        self.lingering.retain(|(_, until)| *until > now);
    }

    /// Answer `code` and keep discarding what the client still sends for [`LINGER`].
    fn refuse(&mut self, mut conn: L::C, code: u16, why: &str) {
        respond(&mut conn, code, "text/plain", why);
        conn.shutdown_write();
        if self.lingering.len() < MAX_PENDING {
            self.lingering.push((conn, Instant::now() + LINGER));
        }
    }
}

/// Read what a lingering connection sent and throw it away; false once it is closed.
fn discard(conn: &mut impl Read) -> bool {
    let mut chunk = [0u8; 8192];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Read what is there (never past the limits) and say how far the request is.
fn read_some<C: Conn>(p: &mut Pending<C>) -> Progress {
    let mut chunk = [0u8; 8192];
    loop {
        let room = match parse(&p.buf) {
            Progress::More => room_left(&p.buf),
            done => return done,
        };
        match p.conn.read(&mut chunk[..room.clamp(1, 8192)]) {
            Ok(0) => return Progress::Gone,
            Ok(n) => p.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return parse(&p.buf),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Progress::Gone,
        }
    }
}

/// How many more bytes may be read into `buf` before a limit is passed (plus one, to
/// see that it is).
fn room_left(buf: &[u8]) -> usize {
    match header_end(buf) {
        None => (MAX_HEADER_BYTES + 1).saturating_sub(buf.len()),
        Some(end) => (end + MAX_BODY + 1).saturating_sub(buf.len()),
    }
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// What `buf` holds so far: a complete request, not yet one, or one to refuse.
fn parse(buf: &[u8]) -> Progress {
    let Some(end) = header_end(buf) else {
        return if buf.len() > MAX_HEADER_BYTES {
            Progress::Refuse(431, "request line and headers too large\n")
        } else {
            Progress::More
        };
    };
    if end > MAX_HEADER_BYTES {
        return Progress::Refuse(431, "request line and headers too large\n");
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Progress::Refuse(400, "the request's headers are not UTF-8\n");
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Progress::Refuse(400, "malformed request line\n");
    };
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                match value.trim().parse::<usize>() {
                    Ok(n) if n <= MAX_BODY => length = n,
                    Ok(_) => return Progress::Refuse(413, "request body too large\n"),
                    Err(_) => return Progress::Refuse(400, "bad Content-Length\n"),
                }
            }
        }
    }
    if buf.len() < end + length {
        return Progress::More;
    }
    Progress::Done(Request {
        method: method.to_string(),
        target: target.to_string(),
        body: buf[end..end + length].to_vec(),
    })
}

/// Write an answer (errors ignored: the client may have gone).
pub fn respond(conn: &mut impl Write, code: u16, ctype: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8]) -> Request {
        match parse(buf) {
            Progress::Done(r) => r,
            _ => panic!("not complete: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn refused(buf: &[u8]) -> u16 {
        match parse(buf) {
            Progress::Refuse(code, _) => code,
            _ => panic!("not refused: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn requests_are_parsed_within_their_limits() {
        let r = done(b"POST /apps/x/rate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}");
        assert_eq!(
            (r.method.as_str(), r.target.as_str()),
            ("POST", "/apps/x/rate")
        );
        assert_eq!(r.body, b"{}");
        assert!(matches!(
            parse(b"GET /status HTTP/1.1\r\nHost: x"),
            Progress::More
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            Progress::More
        ));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEADER_BYTES + 1, b'a');
        assert_eq!(refused(&huge), 431);
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"\r\n\r\n"), 400);
        // Never more read than the limits allow.
        assert_eq!(room_left(b"GET"), MAX_HEADER_BYTES + 1 - 3);
        assert_eq!(room_left(b"GET / HTTP/1.1\r\n\r\n"), MAX_BODY + 1);
    }
}
