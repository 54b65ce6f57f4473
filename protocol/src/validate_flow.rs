//! Checks of where items flow in a valid DAG: every branch ends in a tail, a
//! `table.merge` only joins inputs whose items can meet (the same heads upstream), and no
//! two tails write the same file or folder.

use crate::spec::{AppSpec, TaskKind};
use crate::text::shown;
use std::collections::{BTreeSet, HashMap};

/// Report every task whose items would go nowhere and every merge of inputs that come
/// from different heads. `index` maps task names to positions; unknown inputs and
/// cycles are reported elsewhere (and make this check skip what it cannot follow).
pub(crate) fn check_flow(
    app: &AppSpec,
    index: &HashMap<&str, usize>,
    err: &mut impl FnMut(String, String),
) {
    let mut consumed = vec![false; app.tasks.len()];
    for task in &app.tasks {
        for input in &task.inputs {
            if let Some(&j) = index.get(input.as_str()) {
                consumed[j] = true;
            }
        }
    }
    for (i, task) in app.tasks.iter().enumerate() {
        if task.kind != TaskKind::Tail && !consumed[i] {
            err(
                format!("tasks[{i}] ({})", shown(&task.name)),
                format!(
                    "no task takes the items of this {} task, so they would go nowhere: end every branch in a tail (e.g. table.print or image.show), or make '{}' the tail",
                    task.kind,
                    shown(&task.name)
                ),
            );
        }
    }
    let mut heads_memo: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    check_tails_take_each_item_once(app, index, &mut heads_memo, err);
    for (i, task) in app.tasks.iter().enumerate() {
        if !crate::functions::pairs_parts(&task.function) || task.inputs.len() < 2 {
            continue;
        }
        let per_input: Vec<(usize, BTreeSet<usize>)> = task
            .inputs
            .iter()
            .filter_map(|name| index.get(name.as_str()).copied())
            .map(|j| (j, heads_of(app, index, j, &mut heads_memo)))
            .collect();
        let Some((first, first_heads)) = per_input.first() else {
            continue;
        };
        for (k, (j, heads)) in per_input.iter().enumerate().skip(1) {
            if heads != first_heads {
                err(
                    format!("tasks[{i}] ({}).inputs[{k}]", shown(&task.name)),
                    format!(
                        "table.merge joins the tables of one item (same source and seq), but '{}' carries the items of {} and '{}' those of {}: items of different heads never meet, so the merge would wait for them forever; merge branches of the same head, or send both to one tail",
                        shown(&app.tasks[*first].name),
                        names(app, first_heads),
                        shown(&app.tasks[*j].name),
                        names(app, heads)
                    ),
                );
            }
        }
    }
}

/// A tail takes each item (source, seq) once: two of its inputs fed by one head bring it
/// every item twice, and the second copy was dropped without a word.
fn check_tails_take_each_item_once(
    app: &AppSpec,
    index: &HashMap<&str, usize>,
    heads_memo: &mut HashMap<usize, BTreeSet<usize>>,
    err: &mut impl FnMut(String, String),
) {
    for (i, task) in app.tasks.iter().enumerate() {
        if task.kind != TaskKind::Tail || task.inputs.len() < 2 {
            continue;
        }
        let mut seen: Vec<(usize, BTreeSet<usize>)> = Vec::new();
        for (k, name) in task.inputs.iter().enumerate() {
            let Some(&j) = index.get(name.as_str()) else {
                continue;
            };
            let heads = heads_of(app, index, j, heads_memo);
            if let Some((first, common)) = seen.iter().find_map(|(f, h)| {
                let common: BTreeSet<usize> = h.intersection(&heads).copied().collect();
                (!common.is_empty()).then_some((*f, common))
            }) {
                err(
                    format!("tasks[{i}] ({}).inputs[{k}]", shown(&task.name)),
                    format!(
                        "'{}' and '{}' both carry the items of {}: a tail takes each item once, so one of the two copies would be dropped; join them first with table.merge and give its output to the tail, or give each its own tail",
                        shown(&app.tasks[first].name),
                        shown(&app.tasks[j].name),
                        names(app, &common)
                    ),
                );
            }
            seen.push((j, heads));
        }
    }
}

/// The parameters of a function that name a file or folder it writes.
pub fn output_params(function: &str) -> &'static [&'static str] {
    match function {
        "table.print" => &["path"],
        "image.show" => &["path", "dir"],
        _ => &[],
    }
}

/// The files and folders an app's tails write: (task index, parameter, path as written),
/// from `table.print {path}` and `image.show {path, dir}`.
pub fn output_paths(app: &AppSpec) -> Vec<(usize, &'static str, String)> {
    let mut out = Vec::new();
    for (i, task) in app.tasks.iter().enumerate() {
        for &param in output_params(&task.function) {
            if let Some(path) = task.params.get(param).and_then(|v| v.as_str()) {
                out.push((i, param, path.to_string()));
            }
        }
        // Another output there would mix with it.
        if let Some(j) = crate::functions::output_journal(&task.function, &task.params) {
            out.push((i, "path's journal", j.journal));
        }
    }
    out
}

/// Two tails writing one file would interleave or overwrite each other's items.
pub(crate) fn check_outputs(app: &AppSpec, err: &mut impl FnMut(String, String)) {
    let mut written: HashMap<String, (usize, &'static str)> = HashMap::new();
    for (i, param, path) in output_paths(app) {
        let key = normalised(&path);
        if let Some(&(j, first)) = written.get(&key) {
            err(
                format!("tasks[{i}] ({}).params.{param}", shown(&app.tasks[i].name)),
                format!(
                    "'{}' is already written by tasks[{j}] ({}).params.{first}: two outputs in one place would overwrite each other",
                    shown(&path),
                    shown(&app.tasks[j].name)
                ),
            );
        } else {
            written.insert(key, (i, param));
        }
    }
}

/// A path with `.` components, repeated and trailing separators removed.
pub fn normalised(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("{}{}", if absolute { "/" } else { "" }, parts.join("/"))
}

/// The heads upstream of task `i` (memoised; a cycle or an unknown input contributes nothing).
fn heads_of(
    app: &AppSpec,
    index: &HashMap<&str, usize>,
    i: usize,
    memo: &mut HashMap<usize, BTreeSet<usize>>,
) -> BTreeSet<usize> {
    if let Some(h) = memo.get(&i) {
        return h.clone();
    }
    // Iterative walk upstream, so a long chain cannot exhaust the stack.
    let mut heads = BTreeSet::new();
    let mut seen = vec![false; app.tasks.len()];
    let mut stack = vec![i];
    while let Some(t) = stack.pop() {
        if std::mem::replace(&mut seen[t], true) {
            continue;
        }
        if let Some(h) = memo.get(&t) {
            heads.extend(h.iter().copied());
            continue;
        }
        if app.tasks[t].kind == TaskKind::Head {
            heads.insert(t);
        }
        stack.extend(
            app.tasks[t]
                .inputs
                .iter()
                .filter_map(|name| index.get(name.as_str()).copied()),
        );
    }
    memo.insert(i, heads.clone());
    heads
}

fn names(app: &AppSpec, heads: &BTreeSet<usize>) -> String {
    let list: Vec<String> = heads
        .iter()
        .map(|&h| format!("'{}'", shown(&app.tasks[h].name)))
        .collect();
    match list.len() {
        0 => "no head".into(),
        1 => format!("head {}", list[0]),
        _ => format!("heads {}", list.join(", ")),
    }
}
