//! The rule of the rooms: `supervisor/src` is grouped into rooms (folders) by concern, and a
//! room uses only the rooms below it. The order is the line "Rooms, lowest first:" of
//! docs/architecture.md; this test reads every file of every room and fails on a
//! `crate::ROOM` path that points up (or at a room the order does not name).

use std::path::{Path, PathBuf};

/// The rooms in docs/architecture.md's order, lowest first.
fn documented_order() -> Vec<String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/architecture.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Rooms, lowest first:"))
        .expect("docs/architecture.md has a line 'Rooms, lowest first: a < b < …'");
    line.split('<')
        .map(|r| r.trim().trim_matches('`').trim_end_matches('.').to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::NAME` in `text`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.push(name);
        rest = after;
    }
    names
}

#[test]
fn every_room_uses_only_rooms_below_it() {
    let order = documented_order();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut rooms: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    rooms.sort();
    let mut documented = order.clone();
    documented.sort();
    assert_eq!(
        rooms, documented,
        "the folders of supervisor/src and the documented rooms"
    );
    let mut upward = Vec::new();
    for (level, room) in order.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(room), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for used in crate_paths(&text) {
                match order.iter().position(|r| *r == used) {
                    Some(l) if l > level => upward.push(format!(
                        "{} uses crate::{used} (room '{room}' is below '{used}')",
                        f.strip_prefix(&src).unwrap().display()
                    )),
                    Some(_) => {}
                    None => upward.push(format!(
                        "{} uses crate::{used}, which is no room",
                        f.strip_prefix(&src).unwrap().display()
                    )),
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "uses against the rooms' order:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_checker_sees_a_path_to_a_room() {
    assert_eq!(
        crate_paths("use crate::plan::Plan;\nlet x = crate::run::run_app(a);"),
        ["plan", "run"]
    );
}
