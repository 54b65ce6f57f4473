//! `supervisor start APP` in the foreground, through the node's daemon. The app runs in
//! the daemon beside every other app of the node (one ledger, one GPU agent per
//! device); the `start` command follows it as if it ran the app itself: the app's stages
//! write to the command's own stdout, its progress and summary go to the command's
//! stderr, Ctrl-C (SIGINT/SIGTERM/SIGHUP) drains the app (again: stops it at once), and
//! the command ends with the app and its exit status. If the command itself goes away
//! (killed), the daemon drains the app: a foreground app does not outlive its command.
//!
//! The exchange, on the daemon's `follow.sock` (same directory, modes and peer-uid check
//! as the control socket):
//! - command → daemon: a 4-byte little-endian length with the command's stdout and
//!   stderr attached (`SCM_RIGHTS`), then that many bytes of JSON [`StartRequest`];
//!   later, one byte `s` per drain request;
//! - daemon → command: JSON lines of [`Event`]: `started` or `refused`, then `ended`.

use crate::control::{self, ApiError, Registry, StartRequest};
use crate::env::console::Console;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The daemon's socket for followed starts, beside its control socket.
pub const SOCKET: &str = "follow.sock";
/// A start request larger than this (the environment is in it) is refused.
const MAX_REQUEST: u32 = 4 << 20;
/// How long a command may take to send its request once connected.
const REQUEST_WAIT: Duration = Duration::from_secs(10);
/// How often the command looks at its signals while it waits for the app.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What the daemon tells the command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The app runs (or already ended: `ended` follows).
    Started { message: String },
    /// The app was not started (`code` as the control API's `POST /apps` would answer).
    Refused { code: u16, message: String },
    /// The app ended: whether it succeeded (its summary went to the command's stderr).
    Ended { ok: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    #[error("cannot pass descriptors: {0}")]
    Io(#[from] std::io::Error),
    #[error("expected {expected} descriptors with the request, got {got}")]
    Count { expected: usize, got: usize },
}

/// Send `bytes` with `fds` attached as one message.
fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call,
    // and the control buffer is CMSG_SPACE bytes for exactly `fds.len()` descriptors.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg) as *mut RawFd, fds.len());
        libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    match usize::try_from(sent) {
        Ok(n) if n == bytes.len() => Ok(()),
        Ok(_) => Err(std::io::Error::other("short send of the request header")),
        Err(_) => Err(std::io::Error::last_os_error()),
    }
}

/// Receive exactly `buf.len()` bytes (one message) and the `expected` descriptors
/// attached to it, close-on-exec from the start (no other app's child inherits them).
fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    expected: usize,
) -> Result<Vec<OwnedFd>, FdPassError> {
    const MAX_FDS: usize = 8;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    let mut control = vec![0u8; space as usize];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: the pointers set in msghdr outlive recvmsg; the control messages walked
    // afterwards are those the kernel wrote into `control`, within msg_controllen, and
    // each descriptor read from them is new to this process (owned from here on).
    let got = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len() as _;
        let got = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if got >= 0 {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                    let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for k in 0..n {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k))));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        got
    };
    let got = usize::try_from(got).map_err(|_| std::io::Error::last_os_error())?;
    if got != buf.len() {
        return Err(std::io::Error::other(format!(
            "a header of {got} bytes instead of {}",
            buf.len()
        ))
        .into());
    }
    if fds.len() != expected {
        return Err(FdPassError::Count {
            expected,
            got: fds.len(),
        });
    }
    Ok(fds)
}

/// An app started for a following command.
pub struct Followed {
    /// What to tell the command.
    pub message: String,
    /// The app's drain flag (set again: stop at once).
    pub stop: Arc<AtomicBool>,
    /// The app's end: its summary text, or the failure's.
    pub done: mpsc::Receiver<Result<String, String>>,
}

/// The daemon's side of a followed start.
pub trait FollowLauncher: Send + Sync {
    fn start_followed(
        &self,
        request: StartRequest,
        console: Arc<Console>,
    ) -> Result<Followed, ApiError>;
}

/// Serve `follow.sock` in `runtime_dir` until the process ends.
pub fn serve(
    runtime_dir: &Path,
    registry: Arc<Registry>,
    launcher: Arc<dyn FollowLauncher>,
) -> std::io::Result<PathBuf> {
    let path = runtime_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if control::peer_uid(&conn) != Some(uid) {
                    continue;
                }
                let registry = registry.clone();
                let launcher = launcher.clone();
                let _ = std::thread::Builder::new()
                    .name("follower".into())
                    .spawn(move || follow_one(conn, &registry, launcher.as_ref()));
            }
        })?;
    Ok(path)
}

fn send_event(conn: &mut UnixStream, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line)
}

/// Read one command's request, start its app, and report to it until the app ends.
fn follow_one(mut conn: UnixStream, registry: &Registry, launcher: &dyn FollowLauncher) {
    let request = match read_request(&conn) {
        Ok(r) => r,
        Err(message) => {
            let _ = send_event(&mut conn, &Event::Refused { code: 400, message });
            return;
        }
    };
    let (request, console) = request;
    // The daemon does not exit while it follows an app for a command: the app's end
    // must reach the command first.
    let _busy = registry.busy();
    let followed = launcher.start_followed(request, Arc::new(console));
    let followed = match followed {
        Ok(f) => f,
        Err(e) => {
            let _ = send_event(
                &mut conn,
                &Event::Refused {
                    code: e.code,
                    message: e.message,
                },
            );
            return;
        }
    };
    let _ = send_event(
        &mut conn,
        &Event::Started {
            message: followed.message,
        },
    );
    let ended = Arc::new(AtomicBool::new(false));
    if let Ok(reader) = conn.try_clone() {
        let stop = followed.stop.clone();
        let ended = ended.clone();
        let _ = std::thread::Builder::new()
            .name("follower drain".into())
            .spawn(move || watch_command(reader, &stop, &ended));
    }
    let ok = matches!(followed.done.recv(), Ok(Ok(_)));
    ended.store(true, Ordering::SeqCst);
    let _ = send_event(&mut conn, &Event::Ended { ok });
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// Each `s` from the command drains the app; the command gone before the app ended
/// drains it too.
fn watch_command(mut conn: UnixStream, stop: &AtomicBool, ended: &AtomicBool) {
    let mut byte = [0u8; 1];
    loop {
        match conn.read(&mut byte) {
            Ok(1) if byte[0] == b's' => stop.store(true, Ordering::SeqCst),
            Ok(1) => {}
            Ok(_) | Err(_) => {
                if !ended.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

fn read_request(conn: &UnixStream) -> Result<(StartRequest, Console), String> {
    conn.set_read_timeout(Some(REQUEST_WAIT))
        .map_err(|e| format!("cannot set a timeout: {e}"))?;
    let mut header = [0u8; 4];
    let fds = recv_with_fds(conn, &mut header, 2).map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(header);
    if len > MAX_REQUEST {
        return Err(format!(
            "a start request of {len} bytes (at most {MAX_REQUEST})"
        ));
    }
    let mut body = vec![0u8; len as usize];
    (&*conn)
        .read_exact(&mut body)
        .map_err(|e| format!("cannot read the start request: {e}"))?;
    conn.set_read_timeout(None)
        .map_err(|e| format!("cannot clear the timeout: {e}"))?;
    let request: StartRequest =
        serde_json::from_slice(&body).map_err(|e| format!("bad start request: {e}"))?;
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next()) {
        (Some(stdout), Some(stderr)) => Ok((request, Console::new(stdout, stderr))),
        _ => Err("the request came without stdout and stderr".into()),
    }
}

/// Why a followed start did not get to run the app.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// No daemon at that socket (it may have just exited): ask again.
    #[error("the daemon is not reachable at {path}: {detail}")]
    Unreachable { path: String, detail: String },
    #[error("{0}")]
    Refused(String),
    /// The daemon was closing: ask another.
    #[error("the daemon is shutting down")]
    Closing,
}

/// The command's side: send `request` to the daemon at `sock`, then follow the app to
/// its end and return its exit status.
pub fn follow(sock: &Path, request: &StartRequest) -> Result<ExitCode, FollowError> {
    let unreachable = |e: std::io::Error| FollowError::Unreachable {
        path: sock.display().to_string(),
        detail: e.to_string(),
    };
    let mut conn = UnixStream::connect(sock).map_err(unreachable)?;
    let body = serde_json::to_vec(request)
        .map_err(|e| FollowError::Refused(format!("cannot encode the request: {e}")))?;
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let out = std::io::stdout();
    let err = std::io::stderr();
    let fds = [out.as_fd().as_raw_fd(), err.as_fd().as_raw_fd()];
    send_with_fds(&conn, &len.to_le_bytes(), &fds).map_err(unreachable)?;
    conn.write_all(&body).map_err(unreachable)?;
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Without the handler a signal ends the command, and the daemon then drains
        // the app all the same.
        let _ = signal_hook::flag::register(sig, signalled.clone());
    }
    conn.set_read_timeout(Some(SIGNAL_POLL))
        .map_err(unreachable)?;
    let mut writer = conn.try_clone().map_err(unreachable)?;
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    loop {
        if signalled.swap(false, Ordering::SeqCst) {
            let _ = writer.write_all(b"s");
        }
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                return Err(FollowError::Refused(
                    "the daemon ended before the app did (see daemon.log in the runtime folder)"
                        .into(),
                ))
            }
            Ok(_) if line.ends_with(b"\n") => {
                let event: Event = serde_json::from_slice(&line).map_err(|e| {
                    FollowError::Refused(format!("the daemon said something unexpected: {e}"))
                })?;
                line.clear();
                match event {
                    Event::Started { .. } => {}
                    Event::Refused { code: 503, .. } => return Err(FollowError::Closing),
                    Event::Refused { message, .. } => return Err(FollowError::Refused(message)),
                    Event::Ended { ok } => {
                        return Ok(if ok {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        })
                    }
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                return Err(FollowError::Refused(format!(
                    "lost the daemon while following the app: {e}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn descriptors_pass_with_the_header_and_arrive_close_on_exec() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut pipe_r, pipe_w) = {
            let mut fds = [0; 2];
            // SAFETY: a valid two-element array for pipe to fill.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both descriptors are new and owned here from now on.
            unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        send_with_fds(&a, &7u32.to_le_bytes(), &[pipe_w.as_raw_fd(), 2]).expect("send");
        drop(pipe_w);
        let mut header = [0u8; 4];
        let fds = recv_with_fds(&b, &mut header, 2).expect("receive");
        assert_eq!(u32::from_le_bytes(header), 7);
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let mut received = File::from(fds.into_iter().next().expect("first fd"));
        received
            .write_all(b"through the passed pipe")
            .expect("write");
        drop(received);
        let mut text = String::new();
        pipe_r.read_to_string(&mut text).expect("read");
        assert_eq!(text, "through the passed pipe");
    }

    #[test]
    fn a_header_without_its_descriptors_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(&3u32.to_le_bytes()).expect("send");
        let mut header = [0u8; 4];
        let err = recv_with_fds(&b, &mut header, 2).expect_err("no fds");
        assert!(err.to_string().contains("expected 2 descriptors"), "{err}");
    }
}
