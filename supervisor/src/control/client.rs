//! The client side of the control sockets: finding this user's live supervisors and
//! sending one HTTP/1.1 request to one, believed only from a process of this user.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Live supervisors of this user: (pid, socket).
pub fn find_supervisors() -> Vec<(u32, PathBuf)> {
    let mut found = Vec::new();
    let base = crate::env::runtime::user_dir();
    // A folder another user controls could hold forged sockets: none of it is believed.
    if let Some(why) = crate::env::runtime::untrusted_dir(&base) {
        if base.exists() {
            eprintln!(
                "warning: ignoring the runtime folder {}: {why}",
                protocol::text::shown(&base.display().to_string())
            );
        }
        return found;
    }
    let Ok(entries) = std::fs::read_dir(&base) else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !crate::env::runtime::is_ours(&e.path()) {
            continue;
        }
        let sock = super::socket_path(&e.path());
        if sock.exists() {
            found.push((pid, sock));
        }
    }
    found.sort();
    found
}

/// One request to a supervisor's socket, waiting at most `timeout` for the answer;
/// returns (status code, body).
pub fn request(
    sock: &Path,
    method: &str,
    target: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let mut conn = UnixStream::connect(sock)?;
    // The answer is believed only from a process of this user (SO_PEERCRED).
    let me = nix::unistd::getuid().as_raw();
    match super::peer_uid(&conn) {
        Some(uid) if uid == me => {}
        other => anyhow::bail!(
            "{} is served by uid {}, not by you (uid {me}): not asked",
            sock.display(),
            other.map_or("unknown".to_string(), |u| u.to_string())
        ),
    }
    conn.set_read_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    write!(
        conn,
        "{method} {target} HTTP/1.1\r\nHost: smartpipe\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
