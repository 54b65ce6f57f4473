//! Finishing an output whose tail ended before it wrote it. A Parquet file, a pretty
//! table to a file and an MP4/MOV/MKV/AVI/WebM video are written whole when their tail
//! ends, from what waits beside them (a journal, a folder of segments); a tail stopped at
//! once (a second Ctrl-C) or failing at its end leaves that behind and no file. This
//! writes the file from it as the tail would have, and removes it: `worker-cpu
//! --finish-output`, run by `supervisor finish-outputs APP.json` once the app has ended.

use crate::image::video_segments::SegmentedVideo;
use crate::out_files::written_whole_at;
use crate::table::parquet_out::{whole_journal, ParquetOut};
use crate::table::pretty_out::{self, PrettyTarget, PrettyWriter};
use crate::table::sink::RowWriter;
use crate::StageError;
use protocol::functions::{output_journal, resumable_video, OutputJournal};
use serde_json::{Map, Value};
use std::path::Path;

/// What finishing an output did, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub output: String,
    pub done: String,
}

/// Write the output of tail `function` (`params` as in the app, paths absolute) from
/// what its tail left beside it; `None` when it left nothing (finished, or never ran).
pub fn finish_left_output(
    function: &str,
    params: &Map<String, Value>,
) -> Result<Option<Finished>, StageError> {
    let Some(OutputJournal {
        output, journal, ..
    }) = output_journal(function, params)
    else {
        return Ok(None);
    };
    let (path, journal) = (Path::new(&output), Path::new(&journal));
    if std::fs::symlink_metadata(journal).is_err() {
        return Ok(None);
    }
    let done = match function {
        "image.show" => finish_video(path, params)?,
        _ => match params.get("format").and_then(Value::as_str) {
            Some("parquet") => finish_parquet(path, journal)?,
            _ => finish_pretty(path, journal)?,
        },
    };
    Ok(Some(Finished { output, done }))
}

/// Print the pretty table whose rows wait in the stdout journal `journal` (in a run
/// folder) to stdout, then remove the journal.
pub fn finish_stdout_table(journal: &Path) -> Result<String, StageError> {
    if !journal.is_file() {
        return Err(StageError::io(
            journal.display(),
            "is not a table's journal (a file of JSON arrays)",
        ));
    }
    finish_pretty_to(PrettyTarget::Stdout, journal)
}

fn finish_video(path: &Path, params: &Map<String, Value>) -> Result<String, StageError> {
    let Some(format) = resumable_video(&path.display().to_string()) else {
        return Err(StageError::io(
            path.display(),
            "is not a video kept in segments",
        ));
    };
    let folder = crate::out_files::beside(path, protocol::functions::VIDEO_SEGMENTS_SUFFIX);
    if !folder.is_dir() {
        return Err(StageError::io(
            folder.display(),
            "is not a folder of segments (SmartPipe makes a folder there): remove it by hand",
        ));
    }
    let fps = params.get("fps").and_then(Value::as_f64).unwrap_or(25.0);
    // As a restarted tail would: every segment's frames counted, none acknowledged yet
    // (so none is missed: the whole of each segment is kept).
    let (video, recovered) = SegmentedVideo::open(path, format, fps, Some(&[]))?;
    let segments = video.segments_held();
    video.finish()?;
    Ok(match recovered.frames {
        0 => "its segments held no frame: they are removed and no file is written".into(),
        frames => format!("{frames} frame(s) from {segments} segment(s) joined"),
    })
}

fn finish_parquet(path: &Path, journal: &Path) -> Result<String, StageError> {
    let whole = whole_journal(journal)?;
    if whole.rows == 0 {
        // Nothing to write: an earlier file there stays as it is.
        remove_empty(journal)?;
        return Ok(format!(
            "its journal held no whole row ({} byte(s) cut short): it is removed and no file is written",
            whole.cut
        ));
    }
    let out = ParquetOut::open(
        path,
        Some(whole.len),
        std::rc::Rc::new(std::cell::Cell::new(0)),
    )?;
    out.finish()
        .map_err(|e| StageError::io(path.display(), e))?;
    Ok(format!(
        "{} row(s) written from its journal{}",
        whole.rows,
        cut_note(whole.cut, "table")
    ))
}

fn finish_pretty(path: &Path, journal: &Path) -> Result<String, StageError> {
    finish_pretty_to(PrettyTarget::File(written_whole_at(path)?), journal)
}

fn finish_pretty_to(target: PrettyTarget, journal: &Path) -> Result<String, StageError> {
    let io = |e: std::io::Error| StageError::io(journal.display(), e);
    let size = std::fs::metadata(journal).map_err(io)?.len();
    let (len, rows) = pretty_out::whole_journal(journal).map_err(io)?;
    if rows == 0 {
        remove_empty(journal)?;
        return Ok("its journal held no whole row: it is removed and nothing is written".into());
    }
    let shown = match &target {
        PrettyTarget::Stdout => "stdout".to_string(),
        PrettyTarget::File(file) => file.display().to_string(),
    };
    let mut writer = PrettyWriter::journaled(
        target,
        journal.to_path_buf(),
        Some(len),
        std::rc::Rc::new(std::cell::Cell::new(0)),
    )
    .map_err(io)?;
    writer.finish().map_err(|e| StageError::io(&shown, e))?;
    Ok(format!(
        "{rows} row(s) rendered from its journal{}",
        cut_note(size - len, "row")
    ))
}

fn cut_note(cut: u64, what: &str) -> String {
    match cut {
        0 => String::new(),
        bytes => format!(
            " (its last {bytes} byte(s), a {what} cut short when the tail was stopped, left out)"
        ),
    }
}

fn remove_empty(journal: &Path) -> Result<(), StageError> {
    std::fs::remove_file(journal).map_err(|e| StageError::io(journal.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::sink::frame_row;
    use serde_json::json;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("smartpipe-finish-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    fn params(value: serde_json::Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    /// Cut `file` by `bytes` at its end, as a process stopped while writing leaves it.
    fn cut_end(file: &Path, bytes: u64) {
        let len = std::fs::metadata(file).expect("journal").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|f| f.set_len(len - bytes))
            .expect("cut");
    }

    /// A Parquet tail stopped while it wrote its 5th table: the file holds the 4 whole
    /// ones, and the bytes left out are named.
    #[test]
    fn a_parquet_journal_cut_mid_table_gives_a_file_of_its_whole_tables() {
        let dir = scratch("parquet");
        let path = dir.join("rows.parquet");
        let written = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut out = ParquetOut::open(&path, None, written).expect("open");
        for seq in 0..5 {
            out.write(&frame_row("cam", seq, 8, 8, 1.0).expect("row"))
                .expect("write");
        }
        drop(out);
        cut_end(&path.with_file_name("rows.parquet.rows.arrows"), 9);

        let tail = params(json!({"format": "parquet", "path": path}));
        let finished = finish_left_output("table.print", &tail)
            .expect("finished")
            .expect("something was left");
        assert!(
            finished.done.starts_with("4 row(s) written"),
            "{finished:?}"
        );
        assert!(finished.done.contains("byte(s), a table cut short"));
        let file = std::fs::File::open(&path).expect("the file is written");
        let rows: Vec<u64> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("a Parquet file")
                .build()
                .expect("reader")
                .flatten()
                .flat_map(|b| {
                    use arrow_array::cast::AsArray;
                    b.column(1)
                        .as_primitive::<arrow_array::types::UInt64Type>()
                        .values()
                        .to_vec()
                })
                .collect();
        assert_eq!(rows, vec![0, 1, 2, 3]);
        assert!(!path.with_file_name("rows.parquet.rows.arrows").exists());
        assert_eq!(finish_left_output("table.print", &tail).expect("ok"), None);

        // Its only table cut short: nothing is written over the file there.
        let before = std::fs::read(&path).expect("file");
        let written = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut out = ParquetOut::open(&path, None, written).expect("open");
        out.write(&frame_row("cam", 9, 8, 8, 1.0).expect("row"))
            .expect("write");
        drop(out);
        cut_end(&path.with_file_name("rows.parquet.rows.arrows"), 9);
        let finished = finish_left_output("table.print", &tail)
            .expect("finished")
            .expect("something was left");
        assert!(finished.done.contains("no file is written"), "{finished:?}");
        assert_eq!(std::fs::read(&path).expect("file"), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A pretty table's journal whose last row is cut short: the table has the whole rows.
    #[test]
    fn a_pretty_journal_cut_mid_row_gives_a_table_of_its_whole_rows() {
        let dir = scratch("pretty");
        let path = dir.join("table.txt");
        std::fs::write(
            dir.join("table.txt.rows.jsonl"),
            "[\"source\",\"seq\"]\n[\"cam\",\"0\"]\n[\"cam\",\"1\"]\n[\"cam\",\"2",
        )
        .expect("journal");
        let tail = params(json!({"path": path}));
        let finished = finish_left_output("table.print", &tail)
            .expect("finished")
            .expect("something was left");
        assert!(
            finished.done.starts_with("2 row(s) rendered"),
            "{finished:?}"
        );
        let table = std::fs::read_to_string(&path).expect("table");
        assert_eq!(
            table,
            "+--------+-----+\n| source | seq |\n+--------+-----+\n| cam    | 0   |\n| cam    | 1   |\n+--------+-----+\n"
        );
        // Not even the line of columns is whole: nothing to write, the journal removed.
        std::fs::write(dir.join("table.txt.rows.jsonl"), "[\"sou").expect("journal");
        std::fs::remove_file(&path).expect("table");
        let finished = finish_left_output("table.print", &tail)
            .expect("finished")
            .expect("something was left");
        assert!(finished.done.contains("nothing is written"), "{finished:?}");
        assert!(!path.exists() && !dir.join("table.txt.rows.jsonl").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A video tail killed twice, its segments never joined: the video holds every frame
    /// its encoders got, once, in order.
    #[test]
    fn segments_never_joined_are_joined_into_the_video() {
        let dir = scratch("video");
        let path = dir.join("v.mkv");
        let format = resumable_video("v.mkv").expect("resumable");
        let mut rgb = vec![0; 16 * 16 * 3];
        let (mut first, _) = SegmentedVideo::open(&path, format, 10.0, None).expect("open");
        for seq in 0..5 {
            crate::sources::draw_pattern("solid", 16, 16, seq, &mut rgb);
            first.write("cam", seq, &frame(&rgb)).expect("frame");
        }
        first.killed();
        let (mut second, _) = SegmentedVideo::open(&path, format, 10.0, Some(&[])).expect("open");
        for seq in 5..8 {
            crate::sources::draw_pattern("solid", 16, 16, seq, &mut rgb);
            second.write("cam", seq, &frame(&rgb)).expect("frame");
        }
        second.killed();

        let tail = params(json!({"path": path, "fps": 10}));
        let finished = finish_left_output("image.show", &tail)
            .expect("joined")
            .expect("something was left");
        assert_eq!(finished.done, "8 frame(s) from 2 segment(s) joined");
        let packets = ::media::count_video_packets(&path).expect("a readable video");
        assert_eq!(packets, 8);
        assert!(!dir.join("v.mkv.segments").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn frame(rgb: &[u8]) -> crate::image::sinks::FrameView<'_> {
        crate::image::sinks::FrameView {
            width: 16,
            height: 16,
            rgb,
        }
    }
}
