//! Loading an app file: read, parse, validate, and resolve relative paths against
//! the app file's folder.

use anyhow::Context;
use protocol::functions::{self, ParamType};
use protocol::spec::AppSpec;
use protocol::validate::load_app;
use std::path::{Path, PathBuf};

/// A validated app and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedApp {
    pub spec: AppSpec,
    pub file: PathBuf,
}

/// Read and validate an app; every problem is listed with `FILE:LINE:COL` or the
/// field path.
pub fn load(file: &Path) -> anyhow::Result<LoadedApp> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read app file {}", file.display()))?;
    let mut spec = load_app(&text).map_err(|errs| {
        let lines: Vec<String> = errs
            .0
            .iter()
            .map(|e| match e.position {
                Some((l, c)) => format!("  {}:{l}:{c}: {}: {}", file.display(), e.path, e.message),
                None => format!("  {}: {}: {}", file.display(), e.path, e.message),
            })
            .collect();
        anyhow::anyhow!(
            "{} problem{} in {}:\n{}",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            file.display(),
            lines.join("\n")
        )
    })?;
    let faults_allowed = std::env::var(protocol::messages::ENV_TEST_FAULTS).is_ok_and(|v| v == "1");
    if let Some((i, t)) = spec
        .tasks
        .iter()
        .enumerate()
        .find(|(_, t)| t.function.starts_with("test."))
    {
        if !faults_allowed {
            anyhow::bail!(
                "{}: tasks[{i}] ({}).function: '{}' injects faults for SmartPipe's own tests and is refused unless {}=1",
                file.display(),
                t.name,
                t.function,
                protocol::messages::ENV_TEST_FAULTS
            );
        }
    }
    let dir = file
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    resolve_paths(&mut spec, &dir);
    Ok(LoadedApp {
        spec,
        file: file.to_path_buf(),
    })
}

/// Make every path-like parameter absolute, relative to `dir`.
pub fn resolve_paths(spec: &mut AppSpec, dir: &Path) {
    for task in &mut spec.tasks {
        let Some(def) = functions::find(&task.function) else {
            continue;
        };
        for p in def.params {
            let is_path =
                p.ty == ParamType::Path || (task.function == "source.video" && p.name == "path");
            if !is_path {
                continue;
            }
            if let Some(serde_json::Value::String(s)) = task.params.get_mut(p.name) {
                if !s.contains("://") && Path::new(s.as_str()).is_relative() {
                    *s = dir.join(s.as_str()).display().to_string();
                }
            }
        }
    }
}
