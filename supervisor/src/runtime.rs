//! The supervisor's runtime directory: `/tmp/smartpipe-<uid>/<pid>` (mode 0700), which
//! holds its control socket and the bootstrap sockets of its children (ipc-channel puts
//! them under TMPDIR). A supervisor killed with SIGKILL cannot clean up, so every start
//! removes the directories of supervisors that are no longer alive.
//!
//! `SMARTPIPE_RUNTIME_DIR` replaces `/tmp/smartpipe-<uid>`: supervisors (and the daemon)
//! of different values do not see each other (the tests use it to run apart).

use anyhow::Context;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

/// Environment variable naming the folder used instead of `/tmp/smartpipe-<uid>`.
pub const ENV_RUNTIME_DIR: &str = "SMARTPIPE_RUNTIME_DIR";

/// The per-user folder that holds one runtime dir per live supervisor (and the
/// daemon's log and start lock).
pub fn user_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_RUNTIME_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/smartpipe-{uid}"))
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Remove runtime dirs left by dead supervisors; returns what was removed.
pub fn remove_stale() -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(user_dir()) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Create the per-user folder (mode 0700) if needed; returns it.
pub fn ensure_user_dir() -> anyhow::Result<PathBuf> {
    let base = user_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&base)
        .with_context(|| format!("cannot create {}", base.display()))?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", base.display()))?;
    Ok(base)
}

/// Create this supervisor's runtime dir and point TMPDIR at it. Call before any
/// thread starts (it changes the environment).
pub fn prepare() -> anyhow::Result<PathBuf> {
    for stale in remove_stale() {
        eprintln!(
            "removed stale runtime files of a dead supervisor: {}",
            stale.display()
        );
    }
    let base = ensure_user_dir()?;
    let dir = base.join(std::process::id().to_string());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .or_else(|e| if dir.is_dir() { Ok(()) } else { Err(e) })
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::env::set_var("TMPDIR", &dir);
    Ok(dir)
}

/// Remove this supervisor's runtime dir.
pub fn cleanup(dir: &PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
}
