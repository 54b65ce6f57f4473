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
use std::path::{Path, PathBuf};

/// The outputs an app holds; given back when dropped.
#[derive(Debug)]
pub struct OutputClaims {
    _locks: Vec<Flock<File>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("{path} is written by the running app '{app}' (supervisor pid {pid}){how}: two apps writing one output would overwrite each other's items (give this app another path, or stop '{app}' first)")]
    Taken {
        path: String,
        app: String,
        pid: String,
        /// How the two outputs meet, when not by the same path: `, as {other}`.
        how: String,
    },
    #[error("cannot claim output {path} ({lock}): {source}")]
    Io {
        path: String,
        lock: PathBuf,
        source: std::io::Error,
    },
}

fn lock_file_of(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{:016x}.lock", fnv1a(key)))
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

/// Who holds a claim: (app, pid, path) as its lock file says. The holder writes them
/// just after it took the lock: read again for a moment while the file is empty.
fn holder(file: &mut File) -> (String, String, String) {
    let mut text = String::new();
    for _ in 0..50 {
        text.clear();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut text);
        if text.lines().count() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut lines = text.lines().map(str::to_string);
    let mut next = || lines.next().unwrap_or_else(|| "?".into());
    (next(), next(), next())
}

/// The keys an output is claimed under: its path, and the file's device and inode when
/// it exists (a hard link is another path to the same file).
fn keys_of(output: &str) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut keys = vec![output.to_string()];
    if let Ok(meta) = std::fs::metadata(output) {
        if meta.is_file() {
            keys.push(format!("inode {}:{}", meta.dev(), meta.ino()));
        }
    }
    keys
}

fn claim_in(dir: &Path, app: &str, outputs: &[String]) -> Result<OutputClaims, ClaimError> {
    let mut locks = Vec::new();
    for output in outputs {
        for key in keys_of(output) {
            locks.push(claim_key(dir, app, output, &key)?);
        }
    }
    // A file inside another app's output folder, or a folder holding another app's
    // output, is one output too.
    if let Some((path, app, pid, other)) = nested_claim(dir, outputs, &locks) {
        return Err(ClaimError::Taken {
            path,
            app,
            pid,
            how: format!(", whose output {other} holds it or is inside it"),
        });
    }
    Ok(OutputClaims { _locks: locks })
}

fn claim_key(dir: &Path, app: &str, output: &str, key: &str) -> Result<Flock<File>, ClaimError> {
    let lock = lock_file_of(dir, key);
    let io = |source| ClaimError::Io {
        path: output.to_string(),
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
            let (who, pid, theirs) = holder(&mut file);
            let how = if theirs == output {
                String::new()
            } else {
                format!(", as {theirs}")
            };
            return Err(ClaimError::Taken {
                path: output.to_string(),
                app: who,
                pid,
                how,
            });
        }
        Err((_, errno)) => return Err(io(errno.into())),
    };
    held.set_len(0).map_err(io)?;
    held.rewind().map_err(io)?;
    writeln!(held, "{app}\n{}\n{output}", std::process::id()).map_err(io)?;
    Ok(held)
}

/// An output of another running app that one of `outputs` is inside of or holds:
/// (ours, its app, its pid, its output). Lock files not held are stale and skipped.
fn nested_claim(
    dir: &Path,
    outputs: &[String],
    ours: &[Flock<File>],
) -> Option<(String, String, String, String)> {
    use std::os::unix::fs::MetadataExt;
    let own: Vec<(u64, u64)> = ours
        .iter()
        .filter_map(|f| f.metadata().ok().map(|m| (m.dev(), m.ino())))
        .collect();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let Ok(mut file) = File::open(&path) else {
            continue;
        };
        let is_own = file
            .metadata()
            .is_ok_and(|m| own.contains(&(m.dev(), m.ino())));
        if is_own {
            continue;
        }
        let (app, pid, theirs) = holder(&mut file);
        let Some(mine) = outputs.iter().find(|o| nests(o, &theirs)) else {
            continue;
        };
        // Held by a running supervisor only if it cannot be locked now.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_free) => continue,
            Err(_) => return Some((mine.clone(), app, pid, theirs)),
        }
    }
    None
}

/// Whether one of two different paths is a folder holding the other.
fn nests(a: &str, b: &str) -> bool {
    let inside = |inner: &str, outer: &str| {
        inner.len() > outer.len()
            && inner.starts_with(outer)
            && (outer.ends_with('/') || inner.as_bytes()[outer.len()] == b'/')
    };
    a != b && (inside(a, b) || inside(b, a))
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
        let inside = claim_in(&dir, "third", &["/data/out/frames/x.csv".to_string()])
            .expect_err("a file inside a claimed folder");
        assert!(
            inside
                .to_string()
                .contains("whose output /data/out/frames holds it or is inside it"),
            "{inside}"
        );
        let holding = claim_in(&dir, "fourth", &["/data/out".to_string()]).expect_err("a folder");
        assert!(holding.to_string().contains("'first'"), "{holding}");
        claim_in(&dir, "fifth", &["/data/out/framesake.csv".to_string()])
            .expect("a sibling whose name starts alike is not inside");
        drop(first);
        claim_in(&dir, "second", &outputs).expect("given back");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_hard_link_to_a_claimed_file_is_the_same_output() {
        let dir = std::env::temp_dir().join(format!("sp-claims-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("dir");
        let file = dir.join("data/rows.csv");
        std::fs::write(&file, b"x").expect("file");
        let link = dir.join("data/link.csv");
        std::fs::hard_link(&file, &link).expect("hard link");
        let locks = dir.join("locks");
        let _first = claim_in(&locks, "first", &[file.display().to_string()]).expect("free");
        let err = claim_in(&locks, "second", &[link.display().to_string()]).expect_err("taken");
        let text = err.to_string();
        assert!(
            text.contains("written by the running app 'first'")
                && text.contains(&format!(", as {}", file.display())),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
