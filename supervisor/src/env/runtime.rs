//! The supervisor's runtime directory: `/tmp/smartpipe-<uid>/<pid>` (mode 0700), which
//! holds its control socket and the bootstrap sockets of its children (ipc-channel puts
//! them under TMPDIR). A supervisor killed with SIGKILL cannot clean up, so every start
//! removes the directories of supervisors that are no longer alive.
//!
//! `SMARTPIPE_RUNTIME_DIR` replaces `/tmp/smartpipe-<uid>`: supervisors (and the daemon)
//! of different values do not see each other (the tests use it to run apart).
//!
//! Nothing found there is trusted blindly (issue 17, item 3): the per-user folder must be
//! a real directory of this user that no other user can write into (refused otherwise,
//! never chmod'ed), and only folders that carry SmartPipe's marker file, belong to this
//! user and name a dead pid are ever removed — a shared folder's other contents stay.

use anyhow::Context;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Environment variable naming the folder used instead of `/tmp/smartpipe-<uid>`.
pub const ENV_RUNTIME_DIR: &str = "SMARTPIPE_RUNTIME_DIR";

/// The file each supervisor's runtime dir carries: only dirs with it are SmartPipe's.
pub const MARKER: &str = ".smartpipe-runtime";

fn my_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// The per-user folder that holds one runtime dir per live supervisor (and the
/// daemon's log and start lock).
pub fn user_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(ENV_RUNTIME_DIR).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    PathBuf::from(format!("/tmp/smartpipe-{}", my_uid()))
}

/// Whether a process with this pid exists and has not exited (a zombie, dead but not yet
/// reaped by its parent, is not alive: a supervisor killed with -9 is one until then, and
/// for ever under a parent that never reaps).
pub fn pid_alive(pid: i32) -> bool {
    // Signal 0 only checks for existence.
    pid > 0
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
        && !zombie(pid)
}

/// Whether `pid` is a zombie (`Z` in /proc/PID/stat; the state follows the command
/// name in parentheses, which may itself hold spaces and parentheses).
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Why a path of the runtime folder is not to be trusted, if it is not: it must be a
/// directory (not a symbolic link), owned by this user, and not writable by others.
pub fn untrusted_dir(path: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect it: {e}")),
    };
    if !meta.file_type().is_dir() {
        return Some("it is not a directory (a symbolic link or a file is not accepted)".into());
    }
    let me = my_uid();
    if meta.uid() != me {
        return Some(format!(
            "it belongs to uid {}, not to you (uid {me}): another user may have created it to \
             intercept SmartPipe's control sockets",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "other users can write into it (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

/// Whether `dir` is the runtime dir of a supervisor of this user: trusted and marked.
pub fn is_ours(dir: &Path) -> bool {
    untrusted_dir(dir).is_none()
        && std::fs::symlink_metadata(dir.join(MARKER))
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == my_uid())
}

/// Remove runtime dirs left by dead supervisors; returns what was removed. Only marked
/// dirs of this user named by a dead pid go; anything else in the folder stays.
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
        let path = entry.path();
        if !pid_alive(pid) && is_ours(&path) && std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Create the per-user folder (mode 0700) if needed and check that it can be trusted
/// (see [`untrusted_dir`]); returns it. A folder that exists is never chmod'ed.
pub fn ensure_user_dir() -> anyhow::Result<PathBuf> {
    let base = user_dir();
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", base.display())),
    }
    if let Some(why) = untrusted_dir(&base) {
        anyhow::bail!(
            "refusing the runtime folder {}: {why}; remove it, or set {ENV_RUNTIME_DIR} to a \
             folder of your own (e.g. $XDG_RUNTIME_DIR/smartpipe)",
            base.display()
        );
    }
    Ok(base)
}

/// Create this supervisor's runtime dir (with its marker) and point TMPDIR at it. Call
/// before any thread starts (it changes the environment).
pub fn prepare() -> anyhow::Result<PathBuf> {
    for stale in remove_stale() {
        eprintln!(
            "removed stale runtime files of a dead supervisor: {}",
            stale.display()
        );
    }
    let base = ensure_user_dir()?;
    let dir = base.join(std::process::id().to_string());
    if std::fs::symlink_metadata(&dir).is_ok() {
        // Our own pid: a dead supervisor's dir with the same pid, or someone else's.
        if !is_ours(&dir) {
            anyhow::bail!(
                "{} exists and is not a SmartPipe runtime dir of yours (no {MARKER}); \
                 it is left alone: remove it or set {ENV_RUNTIME_DIR} to another folder",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the stale {}", dir.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        format!(
            "runtime dir of SmartPipe supervisor {}\n",
            std::process::id()
        ),
    )
    .with_context(|| format!("cannot write {}", dir.join(MARKER).display()))?;
    std::env::set_var("TMPDIR", &dir);
    Ok(dir)
}

/// Remove this supervisor's runtime dir.
pub fn cleanup(dir: &PathBuf) {
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_child_that_exited_and_is_not_reaped_yet_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        // Until it is waited for, the exited child stays a zombie: once /proc says so,
        // pid_alive must say dead.
        let start = std::time::Instant::now();
        while !zombie(pid) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "never exited"
            );
            std::thread::yield_now();
        }
        assert!(!pid_alive(pid));
        assert!(pid_alive(std::process::id() as i32));
        child.wait().expect("reap");
    }

    #[test]
    fn a_folder_others_can_write_or_a_symlink_is_not_trusted() {
        let dir = std::env::temp_dir().join(format!("sp-runtime-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(untrusted_dir(&dir), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let why = untrusted_dir(&dir).expect("0777 refused");
        assert!(why.contains("mode 777"), "{why}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        assert!(untrusted_dir(&link).is_some_and(|w| w.contains("not a directory")));
        // Unmarked: not ours, even though trusted.
        assert!(!is_ours(&dir));
        std::fs::write(dir.join(MARKER), "x").expect("marker");
        assert!(is_ours(&dir));
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
