//! Where `supervisor profile` stores an app's profiles on this machine
//! (`profiles/<machine>-<app>.json`), and whether what is stored is still the app's: a
//! profile carries a digest of what the app's tasks compute and goes stale when they change.

use crate::plan::app::LoadedApp;
use crate::plan::smart::Profiles;
use anyhow::Context;
use protocol::spec::{AppSpec, TaskKind};
use std::path::PathBuf;

/// FNV-1a, 64 bits: a name for a text that is the same in every build (profile digests,
/// output claims' lock files).
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// This machine's name in profile files: host name and core count.
pub fn machine() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}c", crate::plan::available_cores())
}

/// Where an app's profiles on this machine live: `profiles/<machine>-<app>.json`
/// beside the app file's folder's parent when it is `apps/`, else beside the app file.
pub fn profile_path(loaded: &LoadedApp) -> PathBuf {
    let dir = loaded
        .file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join("profiles")
        .join(format!("{}-{}.json", machine(), loaded.spec.name))
}

/// Load the app's profiles on this machine, if it was profiled with its current tasks
/// (a profile of an edited app is stale: `None`, as if there were none).
pub fn load_profiles(loaded: &LoadedApp) -> anyhow::Result<Option<Profiles>> {
    Ok(match stored_profiles(loaded)? {
        Stored::Current(p) => Some(p),
        Stored::Missing | Stored::Stale => None,
    })
}

/// What is stored for an app on this machine.
pub enum Stored {
    Missing,
    /// Profiled, but the app's tasks changed since (or the file predates the digest).
    Stale,
    Current(Profiles),
}

pub fn stored_profiles(loaded: &LoadedApp) -> anyhow::Result<Stored> {
    let path = profile_path(loaded);
    if !path.is_file() {
        return Ok(Stored::Missing);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let profiles = Profiles::from_json(&text)
        .with_context(|| format!("bad profile file {}", path.display()))?;
    Ok(
        if profiles.tasks_digest.as_deref() == Some(&tasks_digest(&loaded.spec)) {
            Stored::Current(profiles)
        } else {
            Stored::Stale
        },
    )
}

/// A digest of what an app's tasks compute (name, kind, function, params, inputs; not
/// the batching, replicas or restart policy the planner may set, nor the sources'
/// `count`, `fps` and `limit`, which profiling sets itself): FNV-1a over their JSON,
/// whose object keys are sorted.
pub fn tasks_digest(app: &AppSpec) -> String {
    let content: Vec<serde_json::Value> = app
        .tasks
        .iter()
        .map(|t| {
            let mut params = t.params.clone();
            if t.kind == TaskKind::Head {
                for driven in ["count", "fps", "limit"] {
                    params.remove(driven);
                }
            }
            serde_json::json!([t.name, t.kind, t.function, params, t.inputs])
        })
        .collect();
    let text = serde_json::Value::Array(content).to_string();
    format!("{:016x}", fnv1a(&text))
}
