//! Outputs claimed node-wide: an app's tails' files and folders are claimed for as long as
//! it runs, by every supervisor of the user (the daemon and each `start --no-daemon`), so
//! two apps never write one output and overwrite each other's items. A claim is an
//! exclusive `flock` on a small file in the runtime folder (`outputs/<hash>.lock`, the
//! hash of the output's normalised path) that names the app and its supervisor; the lock
//! goes with the process, so a supervisor killed with -9 leaves nothing claimed. The
//! lock files stay (unlinking a lock file another process may have opened would let two
//! processes hold "the" lock).

use super::profile_store::fnv1a;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

/// The outputs an app holds; given back when dropped.
#[derive(Debug)]
pub struct OutputClaims {
    _locks: Vec<Flock<File>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{path} is written by the running app '{app}' (supervisor pid {pid}): two apps writing one output would overwrite each other's items (give this app another path, or stop '{app}' first)")]
    Taken {
        path: String,
        app: String,
        pid: String,
    },
    #[error("cannot claim output {path} ({lock}): {source}")]
    Io {
        path: String,
        lock: PathBuf,
        source: std::io::Error,
    },
}

fn lock_file_of(dir: &std::path::Path, output: &str) -> PathBuf {
    dir.join(format!("{:016x}.lock", fnv1a(output)))
}

/// Claim every output of app `app` (normalised absolute paths, as
/// [`super::outputs_of`] gives them) in the user's runtime folder, or name the app that
/// writes one of them now.
pub fn claim(app: &str, outputs: &[String]) -> Result<OutputClaims, ClaimError> {
    claim_in(
        &crate::env::runtime::user_dir().join("outputs"),
        app,
        outputs,
    )
}

fn claim_in(
    dir: &std::path::Path,
    app: &str,
    outputs: &[String],
) -> Result<OutputClaims, ClaimError> {
    let mut locks = Vec::new();
    for output in outputs {
        let lock = lock_file_of(dir, output);
        let io = |source| ClaimError::Io {
            path: output.clone(),
            lock: lock.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock)
            .map_err(io)?;
        let mut held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => held,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let mut lines = holder.lines();
                let (who, pid) = (lines.next(), lines.next());
                return Err(ClaimError::Taken {
                    path: output.clone(),
                    app: who.unwrap_or("?").to_string(),
                    pid: pid.unwrap_or("?").to_string(),
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        held.set_len(0).map_err(io)?;
        held.rewind().map_err(io)?;
        writeln!(held, "{app}\n{}\n{output}", std::process::id()).map_err(io)?;
        locks.push(held);
    }
    Ok(OutputClaims { _locks: locks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_claimed_by_one_app_is_refused_to_another_until_given_back() {
        let dir = std::env::temp_dir().join(format!("sp-claims-{}", std::process::id()));
        let outputs = vec![
            "/data/out/a.csv".to_string(),
            "/data/out/frames".to_string(),
        ];
        let first = claim_in(&dir, "first", &outputs).expect("free");
        // flock locks belong to open files: a second open in this process is refused as
        // another process's would be.
        let err = claim_in(&dir, "second", &["/data/out/frames".to_string()]).expect_err("taken");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "/data/out/frames is written by the running app 'first' (supervisor pid "
            ),
            "{text}"
        );
        claim_in(&dir, "second", &["/data/out/b.csv".to_string()]).expect("another path is free");
        drop(first);
        claim_in(&dir, "second", &outputs).expect("given back");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
