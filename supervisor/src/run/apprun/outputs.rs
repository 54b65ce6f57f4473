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
    /// A video streamed to a URL (`rtmp://…`): the restarted tail opens the stream again.
    Stream(String),
}

impl Unresumable {
    /// The output of tail `task` that a restart starts over, if it has one.
    pub fn of(task: &TaskSpec) -> Option<Unresumable> {
        if task.kind != TaskKind::Tail {
            return None;
        }
        let param = |name: &str| task.params.get(name).and_then(|v| v.as_str());
        match task.function.as_str() {
            "image.show" => match param("path") {
                Some(p) if protocol::functions::streams_to_url(p) => {
                    Some(Unresumable::Stream(media::shown(p)))
                }
                path => path
                    .filter(|p| protocol::functions::resumable_video(p).is_none())
                    .map(|p| Unresumable::File(p.into())),
            },
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
/// segments folder is still there, holding items (a finished tail removes it). With
/// `run_dir`, also the journals a pretty table to stdout left in that run folder.
/// `app_file` is named in the command that writes them.
pub fn unfinished(
    tasks: &[TaskSpec],
    app_file: &Path,
    run_dir: Option<&Path>,
) -> Vec<UnfinishedOutput> {
    let app_file = std::path::absolute(app_file).unwrap_or_else(|_| app_file.to_path_buf());
    let mut out = Vec::new();
    for t in tasks.iter().filter(|t| t.kind == TaskKind::Tail) {
        if let Some(j) = protocol::functions::output_journal(&t.function, &t.params) {
            if !holds_items(Path::new(&j.journal), j.folder) {
                continue;
            }
            let note = format!(
                "tail '{}' ended before it wrote {}: what it received is kept in {} ({}); `supervisor finish-outputs {}` writes the file from it (a new start of the app is refused until then; remove what is kept to start over)",
                t.name,
                j.output,
                j.journal,
                j.what,
                app_file.display()
            );
            out.push(UnfinishedOutput {
                task: t.name.clone(),
                output: j.output,
                kept_in: j.journal,
                note,
            });
        } else if let Some(run_dir) =
            run_dir.filter(|_| protocol::functions::prints_pretty_table(&t.function, &t.params))
        {
            for journal in stdout_journals(run_dir, &t.name) {
                let note = format!(
                    "tail '{}' ended before it printed its table: its rows are kept in {} (a JSON array per row); `supervisor finish-outputs {} --run-dir {}` prints it",
                    t.name,
                    journal.display(),
                    app_file.display(),
                    run_dir.display()
                );
                out.push(UnfinishedOutput {
                    task: t.name.clone(),
                    output: "stdout".into(),
                    kept_in: journal.display().to_string(),
                    note,
                });
            }
        }
    }
    out
}

/// Whether a journal (a file) or segments folder left beside an output holds items: an
/// empty journal (a tail that failed before its first row) or a folder without a listed
/// frame holds nothing to write, and is removed by the next run's tail.
fn holds_items(journal: &Path, folder: bool) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(journal) else {
        return false;
    };
    if !folder {
        return meta.is_file() && meta.len() > 0;
    }
    if !meta.is_dir() {
        return false;
    }
    // A segment's frame list: a header line, then a line per frame.
    let lists_a_frame =
        |list: &Path| std::fs::read_to_string(list).is_ok_and(|text| text.lines().nth(1).is_some());
    std::fs::read_dir(journal).is_ok_and(|entries| {
        entries
            .flatten()
            .map(|e| e.path())
            .any(|p| p.extension().is_some_and(|x| x == "frames") && lists_a_frame(&p))
    })
}

/// The stdout-table journals of tail `task` in `run_dir` that hold a row, by replica.
fn stdout_journals(run_dir: &Path, task: &str) -> Vec<PathBuf> {
    let prefix = format!("{task}#");
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(&prefix)
                .and_then(|rest| {
                    rest.strip_suffix(protocol::functions::STDOUT_TABLE_JOURNAL_SUFFIX)
                })
                .is_some_and(|replica| replica.parse::<u32>().is_ok())
                && e.metadata().is_ok_and(|m| m.is_file() && m.len() > 0)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// A run starts its outputs over: one an earlier run left unfinished (its journal or
/// segments still beside it, holding items) would lose what that run's tail received.
/// Refused, naming both ways on. Checked with the outputs claimed (else a running app's
/// journals would read as left behind).
pub fn refuse_unfinished(tasks: &[TaskSpec], app: &str, app_file: &Path) -> Result<(), String> {
    let left = unfinished(tasks, app_file, None);
    if left.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = left
        .iter()
        .map(|o| format!("{} (kept in {})", o.output, o.kept_in))
        .collect();
    Err(format!(
        "an earlier run of app '{app}' did not write {}: this run would start over and lose what its tail received. Run `supervisor finish-outputs {}` to write it, or remove what is kept to start over",
        named.join(", "),
        std::path::absolute(app_file)
            .unwrap_or_else(|_| app_file.to_path_buf())
            .display()
    ))
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
        Unresumable::Stream(url) => format!(
            "{head}; its stream to {url} was opened again each time: the frames sent after the last acknowledgement before a restart are sent again"
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
                Unresumable::Stream(url) => (url.clone(), Vec::new()),
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

    /// What a tail left counts only when it holds items: an empty journal (a tail that
    /// failed before its first row) or segments without a listed frame do not block the
    /// next start; a stdout table's journal counts in its run folder.
    #[test]
    fn only_journals_holding_items_are_unfinished_outputs() {
        let dir = std::env::temp_dir().join(format!("sup-unfinished-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("v.mp4.segments")).unwrap();
        let path = |name: &str| dir.join(name).display().to_string();
        let tasks = vec![
            tail(
                "table.print",
                serde_json::json!({"format": "parquet", "path": path("r.parquet")}),
            ),
            tail("image.show", serde_json::json!({"path": path("v.mp4")})),
            tail("table.print", serde_json::json!({})),
        ];
        let app_file = dir.join("app.json");
        let tasks_of = |tasks: &[TaskSpec]| {
            unfinished(tasks, &app_file, Some(&dir))
                .into_iter()
                .map(|o| o.kept_in)
                .collect::<Vec<_>>()
        };
        std::fs::write(dir.join("r.parquet.rows.arrows"), b"").unwrap();
        std::fs::write(dir.join("v.mp4.segments/0.frames"), "{\"width\":8}\n").unwrap();
        std::fs::write(dir.join("t#0.table.rows.jsonl"), b"").unwrap();
        assert_eq!(tasks_of(&tasks), Vec::<String>::new(), "nothing held");
        assert!(refuse_unfinished(&tasks, "a", &app_file).is_ok());

        std::fs::write(dir.join("r.parquet.rows.arrows"), b"ARROW").unwrap();
        std::fs::write(
            dir.join("v.mp4.segments/0.frames"),
            "{\"width\":8}\n[0,\"cam\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("t#0.table.rows.jsonl"), "[\"seq\"]\n").unwrap();
        assert_eq!(
            tasks_of(&tasks),
            vec![
                path("r.parquet.rows.arrows"),
                path("v.mp4.segments"),
                path("t#0.table.rows.jsonl")
            ]
        );
        let refused = refuse_unfinished(&tasks, "a", &app_file).unwrap_err();
        assert!(
            refused.contains("r.parquet") && refused.contains("v.mp4"),
            "{refused}"
        );
        assert!(
            !refused.contains("table.rows.jsonl"),
            "a stdout table's journal is in its own run's folder: {refused}"
        );
        let _ = std::fs::remove_dir_all(&dir);
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
