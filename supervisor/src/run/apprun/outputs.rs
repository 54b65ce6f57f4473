//! Tail outputs a restart cannot resume, and what the summary tells about them. A
//! restarted csv or jsonl tail cuts its file back to the last acknowledgement and goes
//! on (a Parquet file or a pretty table does the same with its journal, from which it is
//! written at the end; an MP4, MOV, MKV, AVI or WebM video continues its segments, joined
//! at the end); a video in another container (`.gif`, `.flv`…) cannot be cut back, so the
//! restarted tail moves the earlier process's file aside as `<stem>.part-<k>.<ext>`
//! (`worker-cpu/src/out_files.rs`, `set_aside`) and starts a new one; csv or jsonl rows
//! on stdout cannot be taken back. Every item is in one of
//! the files (one written just before a restart can be in two); the run's end names
//! the parts (`restarted_outputs`).

use super::AppRun;
use crate::observe::summary::{RestartedOutput, UnfinishedOutput};
use protocol::spec::{TaskKind, TaskSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts of outputs that existed before a tail's first restart, per replica
/// (those are earlier runs', not this run's).
pub type PartsBefore = BTreeMap<usize, BTreeSet<PathBuf>>;

/// An output a restarted tail starts over.
#[derive(Debug, Clone, PartialEq)]
pub enum Unresumable {
    /// A file the restarted tail moves aside before it writes a new one.
    File(PathBuf),
    /// csv or jsonl on stdout: what was printed cannot be taken back.
    Stdout(String),
}

impl Unresumable {
    /// The output of tail `task` that a restart starts over, if it has one.
    pub fn of(task: &TaskSpec) -> Option<Unresumable> {
        if task.kind != TaskKind::Tail {
            return None;
        }
        let param = |name: &str| task.params.get(name).and_then(|v| v.as_str());
        match task.function.as_str() {
            "image.show" => param("path")
                .filter(|p| protocol::functions::resumable_video(p).is_none())
                .map(|p| Unresumable::File(p.into())),
            "table.print" => match (param("format").unwrap_or("pretty"), param("path")) {
                ("csv" | "jsonl" | "parquet", Some(_)) => None,
                ("pretty", _) => None,
                (format, _) => Some(Unresumable::Stdout(format.to_string())),
            },
            _ => None,
        }
    }
}

/// The outputs of `tasks` whose tail ended without writing them: their journal or
/// segments folder is still there (a finished tail removes it). `app_file` is named in
/// the command that writes them.
pub fn unfinished(tasks: &[TaskSpec], app_file: &Path) -> Vec<UnfinishedOutput> {
    tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Tail)
        .filter_map(|t| {
            let j = protocol::functions::output_journal(&t.function, &t.params)?;
            std::fs::symlink_metadata(&j.journal).ok()?;
            let note = format!(
                "tail '{}' ended before it wrote {}: what it received is kept in {} ({}); `supervisor finish-outputs {}` writes the file from it (a new run of the app starts the output over)",
                t.name,
                j.output,
                j.journal,
                j.what,
                app_file.display()
            );
            Some(UnfinishedOutput {
                task: t.name.clone(),
                output: j.output,
                kept_in: j.journal,
                note,
            })
        })
        .collect()
}

/// The parts (`<stem>.part-<k>.<ext>`) of output `path` in its folder, by `k`.
pub fn parts_of(path: &Path) -> BTreeMap<u32, PathBuf> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!("{stem}.part-");
    let suffix = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let k = name
                .strip_prefix(&prefix)?
                .strip_suffix(&suffix)?
                .parse::<u32>()
                .ok()?;
            Some((k, e.path()))
        })
        .collect()
}

/// The line people read about a restarted tail whose output starts over.
pub fn note(task: &str, restarts: u32, output: &Unresumable, parts: &[PathBuf]) -> String {
    let times = if restarts == 1 { "time" } else { "times" };
    let head = format!("tail '{task}' was restarted {restarts} {times}");
    match output {
        Unresumable::File(path) if parts.is_empty() => format!(
            "{head}; its output {} cannot be resumed, but no earlier part had to be moved aside (the earlier process left no file, or the restarted one had nothing to add): it is the only file",
            path.display()
        ),
        Unresumable::File(path) => format!(
            "{head}; its output {} cannot be resumed, so each restart started a new file: it holds the items from the last restart on, the items before are in {} (an item written just before a restart can be in two files)",
            path.display(),
            parts
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Unresumable::Stdout(format) => format!(
            "{head}; its output (stdout, {format}) cannot be cut back: the rows printed after the last acknowledgement before a restart are printed again"
        ),
    }
}

impl AppRun<'_> {
    /// Before a restarted tail's new process starts: if its output cannot be resumed,
    /// remember it (with the parts of its file that exist already, from earlier runs:
    /// those are not this run's) and say so.
    pub(super) fn note_output_restart(&mut self, idx: usize) {
        let r = &self.replicas[idx];
        let Some(output) = self.wiring.app.tasks.get(r.task).and_then(Unresumable::of) else {
            return;
        };
        let label = r.label.clone();
        let file = match &output {
            Unresumable::File(path) => Some(path.clone()),
            _ => None,
        };
        self.restarted_outputs.entry(idx).or_insert_with(|| {
            file.as_deref()
                .map(|p| parts_of(p).into_values().collect())
                .unwrap_or_default()
        });
        match file {
            Some(path) => tracing::warn!(
                "{label} is restarted and its output {} cannot be resumed: the new process moves the earlier one's file aside (<stem>.part-<k>.<ext>) and starts a new one",
                path.display()
            ),
            None => tracing::warn!(
                "{label} is restarted and its output cannot be resumed: it starts over"
            ),
        }
    }

    /// Every tail restarted during the run whose output cannot be resumed: how often,
    /// and where the items before its restarts are.
    pub fn restarted_outputs(&self) -> Vec<RestartedOutput> {
        let mut out = Vec::new();
        for (&idx, before) in &self.restarted_outputs {
            let r = &self.replicas[idx];
            let Some(task) = self.wiring.app.tasks.get(r.task) else {
                continue;
            };
            let Some(output) = Unresumable::of(task) else {
                continue;
            };
            let (target, parts): (String, Vec<PathBuf>) = match &output {
                Unresumable::File(path) => (
                    path.display().to_string(),
                    parts_of(path)
                        .into_values()
                        .filter(|p| !before.contains(p))
                        .collect(),
                ),
                Unresumable::Stdout(_) => ("stdout".into(), Vec::new()),
            };
            out.push(RestartedOutput {
                stage: r.label.clone(),
                task: task.name.clone(),
                restarts: r.incarnation,
                output: target,
                note: note(&task.name, r.incarnation, &output, &parts),
                earlier_parts: parts.iter().map(|p| p.display().to_string()).collect(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(function: &str, params: serde_json::Value) -> TaskSpec {
        serde_json::from_value(serde_json::json!({
            "name": "t", "kind": "tail", "function": function, "params": params
        }))
        .unwrap()
    }

    #[test]
    fn only_outputs_that_cannot_be_cut_back_start_over() {
        let of = |f: &str, p: serde_json::Value| Unresumable::of(&tail(f, p));
        use serde_json::json;
        assert_eq!(
            of("image.show", json!({"path": "/o/v.gif"})),
            Some(Unresumable::File("/o/v.gif".into()))
        );
        for resumed in ["/o/v.mp4", "/o/v.MKV", "/o/v.avi", "/o/v.webm", "/o/v.mov"] {
            assert_eq!(
                of("image.show", json!({"path": resumed})),
                None,
                "{resumed}"
            );
        }
        assert_eq!(of("image.show", json!({"dir": "/o/frames"})), None);
        assert_eq!(
            of("table.print", json!({"format": "csv", "path": "r.csv"})),
            None
        );
        assert_eq!(
            of("table.print", json!({"format": "jsonl", "path": "r.j"})),
            None
        );
        assert_eq!(
            of("table.print", json!({"format": "parquet", "path": "r.pq"})),
            None
        );
        assert_eq!(of("table.print", json!({})), None);
        assert_eq!(
            of("table.print", json!({"format": "csv"})),
            Some(Unresumable::Stdout("csv".into()))
        );
    }

    #[test]
    fn the_parts_of_an_output_are_found_by_number() {
        let dir = std::env::temp_dir().join(format!("sup-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for name in [
            "v.mp4",
            "v.part-2.mp4",
            "v.part-10.mp4",
            "v.part-x.mp4",
            "w.part-1.mp4",
            "v.part-1.avi",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let parts = parts_of(&dir.join("v.mp4"));
        assert_eq!(
            parts.into_iter().collect::<Vec<_>>(),
            vec![
                (2, dir.join("v.part-2.mp4")),
                (10, dir.join("v.part-10.mp4"))
            ]
        );
        let line = note(
            "video",
            2,
            &Unresumable::File(dir.join("v.mp4")),
            &[dir.join("v.part-1.mp4")],
        );
        assert!(line.starts_with("tail 'video' was restarted 2 times; its output "));
        assert!(line.contains("v.part-1.mp4"), "{line}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
