//! Tests of the table.print writers and of the pure parts of the table stages.

use super::detections::tests::{face, line};
use super::sink::{with_item_keys, TableSink};
use super::stage::{combine, map_tables, split, Failure, Part};
use super::*;
use arrow_array::cast::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use protocol::messages::{Envelope, Hop, Payload, PixelFormat};
use protocol::shm::ShmRef;
use protocol::{PoolId, TaskId};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("smartpipe-tables-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn print(format: &str, name: &str, batches: &[RecordBatch]) -> String {
    let path = temp(name);
    let mut sink = TableSink::open(format, path.to_str()).unwrap();
    for b in batches {
        sink.write(b).unwrap();
    }
    sink.finish().unwrap();
    std::fs::read_to_string(&path).unwrap()
}

fn detections() -> RecordBatch {
    let rows = [face(3, 0.9), line(3, "say \"hi\", ok")];
    detections_batch(&rows, Extras::of_rows(&rows)).unwrap()
}

#[test]
fn csv_quotes_and_writes_lists_as_json() {
    let out = print("csv", "d.csv", &[detections()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "source,seq,class,score,x1,y1,x2,y2,landmarks,text,text_score,polygon"
    );
    assert_eq!(
        lines[1],
        "cam,3,face,0.9,10.0,20.0,50.0,70.0,\"[1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0,9.0,10.0]\",,,"
    );
    assert!(
        lines[2].ends_with(",\"say \"\"hi\"\", ok\",0.75,\"[0.0,0.0,9.0,0.0,9.0,5.0,0.0,5.0]\""),
        "{}",
        lines[2]
    );
    assert_eq!(lines.len(), 3);
}

#[test]
fn csv_escapes_formulas_in_text_cells_only_when_asked() {
    let rows = [
        line(3, "=HYPERLINK(\"http://x\",\"ok\")"),
        line(4, "-5 dB"),
        line(5, "@SUM(A1)"),
        line(6, "plain = text"),
        detections::DetectionRow {
            x1: -3.0,
            ..face(7, 0.5)
        },
    ];
    let batch = detections_batch(&rows, Extras::of_rows(&rows)).unwrap();
    let path = temp("formulas.csv");
    let mut sink = TableSink::open("csv", path.to_str()).unwrap();
    sink.escape_formulas();
    sink.write(&batch).unwrap();
    sink.finish().unwrap();
    let out = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"ok\"\")\","),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains(",'-5 dB,"), "{}", lines[2]);
    assert!(lines[3].contains(",'@SUM(A1),"), "{}", lines[3]);
    assert!(lines[4].contains(",plain = text,"), "{}", lines[4]);
    // A number stays a number, negative or not.
    assert!(
        lines[5].starts_with("cam,7,face,0.5,-3.0,20.0,50.0,70.0,"),
        "{}",
        lines[5]
    );
    // Without the parameter the cells are written as they are.
    let kept = print("csv", "kept.csv", &[batch]);
    assert!(
        kept.contains(",-5 dB,") && kept.contains(",@SUM(A1),"),
        "{kept}"
    );
}

#[test]
fn csv_keeps_the_first_columns_for_later_tables() {
    let boxes = detections_batch(&[face(4, 0.5)], Extras::NONE).unwrap();
    let out = print("csv", "two.csv", &[detections(), boxes]);
    let last = out.lines().last().unwrap();
    assert_eq!(last, "cam,4,face,0.5,10.0,20.0,50.0,70.0,,,,");
}

#[test]
fn jsonl_has_arrays_and_nulls() {
    let out = print("jsonl", "d.jsonl", &[detections()]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["landmarks"][9], 10.0);
    assert_eq!(rows[0]["text"], serde_json::Value::Null);
    assert_eq!(rows[1]["text"], "say \"hi\", ok");
    assert_eq!(rows[1]["polygon"].as_array().unwrap().len(), 8);
    assert_eq!(rows[1]["seq"], 3);
}

#[test]
fn pretty_aligns_columns() {
    let frames = [
        crate::table::print::frame_row("a", 1, 640, 480, 1.5).unwrap(),
        crate::table::print::frame_row("camera-long", 22, 8, 6, 12.25).unwrap(),
    ];
    let out = print("pretty", "f.txt", &frames);
    let expected = "\
+-------------+-----+-------+--------+------------+
| source      | seq | width | height | latency_ms |
+-------------+-----+-------+--------+------------+
| a           | 1   | 640   | 480    | 1.5        |
| camera-long | 22  | 8     | 6      | 12.25      |
+-------------+-----+-------+--------+------------+
";
    assert_eq!(out, expected);
    // Nothing printed: still a table with the frame columns.
    assert!(print("pretty", "none.txt", &[]).contains("| source | seq |"));
    assert_eq!(
        print("csv", "none.csv", &[]).trim(),
        "source,seq,width,height,latency_ms"
    );
}

#[test]
fn parquet_reads_back_to_the_same_rows() {
    let path = temp("d.parquet");
    let first = detections();
    let empty = detections_batch(&[], Extras::of_rows(&[line(0, "")])).unwrap();
    let plain = detections_batch(&[face(9, 0.25)], Extras::NONE).unwrap();
    let mut sink = TableSink::open("parquet", path.to_str()).unwrap();
    for b in [&first, &empty, &plain] {
        sink.write(b).unwrap();
    }
    sink.finish().unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let back = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(back.schema().fields(), first.schema().fields());
    let mut want = rows_of(&first).unwrap();
    let mut nine = face(9, 0.25);
    nine.landmarks = None;
    want.push(nine);
    assert_eq!(rows_of(&back).unwrap(), want);
    // A later table whose column has another type is refused, not written.
    let mut sink = TableSink::open("parquet", temp("e.parquet").to_str()).unwrap();
    sink.write(&first).unwrap();
    let odd = select(&first, &["seq".into()]).unwrap();
    let odd = with_item_keys(&odd, "cam", 1).unwrap();
    assert!(matches!(sink.write(&odd), Err(sink::SinkError::Table(_))));
    assert!(TableSink::open("parquet", None).is_err());
}

/// The seq column of every row of the Parquet file at `path`, in order.
fn parquet_seqs(path: &std::path::Path) -> Vec<u64> {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    reader
        .flat_map(|b| {
            let b = b.unwrap();
            let seqs = b
                .column_by_name("seq")
                .unwrap()
                .as_primitive::<arrow_array::types::UInt64Type>();
            seqs.values().to_vec()
        })
        .collect()
}

fn write_frames(sink: &mut TableSink, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        sink.write(&sink::frame_row("cam", seq, 4, 3, 1.0).unwrap())
            .unwrap();
    }
}

/// A restarted csv/jsonl tail cuts its file back to the acknowledged length. A file
/// removed or cut while the app ran used to be created again or padded with zeros up to
/// that length (NUL bytes where the delivered rows were); it is refused, naming the file.
#[test]
fn a_csv_file_shorter_than_acknowledged_is_refused_not_padded() {
    for format in ["csv", "jsonl"] {
        let path = temp(&format!("cut.{format}"));
        let mut first = TableSink::open(format, path.to_str()).unwrap();
        write_frames(&mut first, 0..6);
        first.finish().unwrap();
        let acknowledged = std::fs::metadata(&path).unwrap().len();

        // Resumed at what was acknowledged: the rows after it come again, each once.
        let mut resumed =
            TableSink::open_resumed(format, path.to_str(), Some(acknowledged), None).unwrap();
        write_frames(&mut resumed, 6..8);
        resumed.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines().count(),
            if format == "csv" { 9 } else { 8 },
            "{text}"
        );

        for (damage, expected) in [("cut", "fewer than"), ("removed", "is gone")] {
            if damage == "cut" {
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(acknowledged / 2).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
            let err = TableSink::open_resumed(format, path.to_str(), Some(acknowledged), None)
                .err()
                .unwrap_or_else(|| panic!("{format} {damage}: resumed over lost rows"))
                .to_string();
            assert!(
                err.contains(&path.display().to_string()) && err.contains(expected),
                "{format} {damage}: {err}"
            );
            if damage == "cut" {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    !bytes.contains(&0),
                    "{format}: the file was padded with zeros"
                );
            }
        }
    }
}

/// A Parquet file has no footer until it is closed, so a killed tail used to leave
/// an unreadable part while its rows counted as delivered. The rows go to a journal
/// that a restarted tail cuts back to the acknowledged length and continues.
#[test]
fn a_killed_parquet_tail_is_resumed_from_its_journal() {
    let path = temp("killed.parquet");
    let journal = crate::out_files::beside(&path, protocol::functions::PARQUET_JOURNAL_SUFFIX);
    let mut first = TableSink::open("parquet", path.to_str()).unwrap();
    write_frames(&mut first, 0..6);
    let acknowledged = first.written().expect("the journal counts its bytes");
    write_frames(&mut first, 6..10);
    // Killed: no finish. The journal is an Arrow IPC stream readable as it is.
    std::mem::forget(first);
    assert!(!path.exists(), "the file is written only at the end");
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::fs::File::open(&journal).unwrap(), None)
            .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 10, "the journal holds every table written");
    // The restarted process: the items after the acknowledgement come again.
    let mut second =
        TableSink::open_resumed("parquet", path.to_str(), Some(acknowledged), None).unwrap();
    write_frames(&mut second, 6..12);
    second.finish().unwrap();
    assert_eq!(
        parquet_seqs(&path),
        (0..12).collect::<Vec<_>>(),
        "each row once, in order"
    );
    assert!(
        !journal.exists(),
        "the journal is removed once the file is written"
    );
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("killed.parquet.")
        })
        .collect();
    assert!(left.is_empty(), "no temporary file is left: {left:?}");

    // Restarted after it had finished: the file stays as it is.
    let again =
        TableSink::open_resumed("parquet", path.to_str(), Some(acknowledged), None).unwrap();
    again.finish().unwrap();
    assert_eq!(parquet_seqs(&path), (0..12).collect::<Vec<_>>());

    // A journal shorter than what was acknowledged is named, not silently continued.
    let mut short = TableSink::open("parquet", path.to_str()).unwrap();
    write_frames(&mut short, 0..2);
    let len = short.written().unwrap();
    std::mem::forget(short);
    let err = TableSink::open_resumed("parquet", path.to_str(), Some(len + 100), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains(&journal.display().to_string()) && err.contains("acknowledged"),
        "{err}"
    );
}

/// The pretty table is written at the end: a restarted tail's table used to hold only
/// the rows after its last restart, and a long run kept every row in memory. Its rows
/// wait in a journal that a restarted tail continues.
#[test]
fn a_killed_pretty_tail_is_resumed_from_its_journal() {
    let path = temp("killed.txt");
    let journal = crate::out_files::beside(&path, protocol::functions::PRETTY_JOURNAL_SUFFIX);
    let mut first = TableSink::open("pretty", path.to_str()).unwrap();
    write_frames(&mut first, 0..5);
    let acknowledged = first.written().expect("the journal counts its bytes");
    write_frames(&mut first, 5..8);
    std::mem::forget(first);
    assert!(
        journal.exists() && !path.exists(),
        "rows wait in the journal"
    );
    let mut second =
        TableSink::open_resumed("pretty", path.to_str(), Some(acknowledged), None).unwrap();
    write_frames(&mut second, 5..12);
    second.finish().unwrap();
    let table = std::fs::read_to_string(&path).unwrap();
    let seqs: Vec<u64> = table
        .lines()
        .filter(|l| l.starts_with("| cam"))
        .map(|l| l.split('|').nth(2).unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (0..12).collect::<Vec<_>>(),
        "each row once, in order:\n{table}"
    );
    assert!(table.starts_with("+--------+-----+"), "aligned:\n{table}");
    assert!(table
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("| source | seq | width |"));
    assert!(
        !journal.exists(),
        "the journal is removed once the table is written"
    );
    // Restarted after it had written the table: the table stays as it is.
    let again = TableSink::open_resumed("pretty", path.to_str(), Some(acknowledged), None).unwrap();
    again.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), table);
}

/// Outputs written whole at the end (Parquet, pretty): a folder at the path is refused at
/// open, not after the run; a symbolic link is written through, not replaced; temporary
/// files a killed process left are removed.
#[test]
fn outputs_written_at_the_end_refuse_folders_follow_links_and_clear_temporaries() {
    for format in ["parquet", "pretty"] {
        let folder = temp(&format!("folder.{format}"));
        std::fs::create_dir_all(&folder).unwrap();
        let err = TableSink::open(format, folder.to_str())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("is a folder"), "{format}: {err}");

        let real = temp(&format!("real-{format}.out"));
        let link = temp(&format!("link-{format}.out"));
        let _ = std::fs::remove_file(&real);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let stale = temp(&format!("real-{format}.out.writing-4242"));
        std::fs::write(&stale, b"half").unwrap();
        let mut sink = TableSink::open(format, link.to_str()).unwrap();
        write_frames(&mut sink, 0..3);
        sink.finish().unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{format}: the link is kept"
        );
        assert!(
            std::fs::metadata(&real).unwrap().len() > 0,
            "{format}: written through"
        );
        assert!(!stale.exists(), "{format}: the stale temporary is removed");
    }
}

#[test]
fn item_keys_are_added_when_selected_away() {
    let only = select(&detections(), &["class".into(), "score".into()]).unwrap();
    let keyed = with_item_keys(&only, "cam", 8).unwrap();
    assert_eq!(column_list(&keyed), "source, seq, class, score");
    assert_eq!(
        keyed
            .column(1)
            .as_primitive::<arrow_array::types::UInt64Type>()
            .value(1),
        8
    );
    assert_eq!(with_item_keys(&detections(), "x", 0).unwrap(), detections());
}

fn frame(slot: u32) -> Payload {
    Payload::Frame {
        shm: ShmRef {
            pool: PoolId::new(1),
            slot,
            generation: 0,
            offset: 0,
            len: 12,
        },
        width: 2,
        height: 2,
        format: PixelFormat::Rgb8,
    }
}

fn envelope(stage: u16, payload: Payload) -> Envelope {
    Envelope {
        app: "a".into(),
        source: "cam".into(),
        seq: 3,
        created_ns: 1,
        hops: vec![Hop {
            stage: TaskId::new(stage),
            recv_ns: 2,
            sent_ns: 3,
        }],
        payload,
    }
}

fn table(b: &RecordBatch) -> Payload {
    Payload::Table(encode_ipc(b).unwrap())
}

#[test]
fn map_tables_keeps_the_frame_and_transforms_the_table() {
    let pred = Predicate::parse("score > 0.8").unwrap();
    let payload = Payload::Batch(vec![frame(5), table(&detections())]);
    let (out, n) = map_tables(&payload, &mut |b| filter(b, &pred)).unwrap();
    assert_eq!(n, 1);
    let Payload::Batch(parts) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(parts[0], frame(5));
    let Payload::Table(bytes) = &parts[1] else {
        panic!()
    };
    assert_eq!(decode_ipc(bytes).unwrap().num_rows(), 1);
    assert_eq!(out.shm_refs(), payload.shm_refs());
    let bad = Payload::Batch(vec![frame(5), Payload::Table(b"junk".to_vec())]);
    assert!(matches!(
        map_tables(&bad, &mut |b| filter(b, &pred)),
        Err(Failure::Decode(_))
    ));
    let wrong = Predicate::parse("nope > 1").unwrap();
    assert!(matches!(
        map_tables(&payload, &mut |b| filter(b, &wrong)),
        Err(Failure::Op(_))
    ));
}

fn part(stage: u16, recv: u64, payload: Payload) -> Part {
    let (mut tables, mut others) = (Vec::new(), Vec::new());
    split(&payload, &mut tables, &mut others).unwrap();
    Part {
        stage: Some(TaskId::new(stage)),
        env: envelope(stage, payload),
        recv,
        tables,
        others,
    }
}

#[test]
fn combine_concats_tables_and_keeps_one_copy_of_a_shared_frame() {
    let faces = detections_batch(&[face(3, 0.9)], Extras::MTCNN).unwrap();
    let texts = detections_batch(&[line(3, "A")], Extras::OCR).unwrap();
    let parts = vec![
        part(4, 20, Payload::Batch(vec![frame(5), table(&texts)])),
        part(2, 10, Payload::Batch(vec![frame(5), table(&faces)])),
    ];
    let c = combine(parts, &MergeHow::Concat, false).unwrap();
    assert_eq!(c.duplicates, vec![frame(5)]);
    assert_eq!(c.recv, 20);
    assert_eq!(
        c.env.hops[0].stage,
        TaskId::new(4),
        "hops of the last arrival"
    );
    let Payload::Batch(out) = &c.env.payload else {
        panic!()
    };
    assert_eq!(out[0], frame(5));
    let Payload::Table(bytes) = &out[1] else {
        panic!()
    };
    let rows = rows_of(&decode_ipc(bytes).unwrap()).unwrap();
    assert_eq!(rows[0].class, "face", "inputs in stage order");
    assert_eq!(rows[1].text.as_deref(), Some("A"));
}

#[test]
fn combine_joins_frames_with_tables_and_empties_a_missing_join() {
    let faces = detections_batch(&[face(3, 0.9)], Extras::NONE).unwrap();
    let c = combine(
        vec![part(1, 1, frame(7)), part(2, 2, table(&faces))],
        &MergeHow::Join(vec![]),
        false,
    )
    .unwrap();
    assert!(c.duplicates.is_empty());
    assert_eq!(c.env.payload, Payload::Batch(vec![frame(7), table(&faces)]));
    let c = combine(
        vec![part(2, 2, table(&faces))],
        &MergeHow::Join(vec![]),
        true,
    )
    .unwrap();
    let Payload::Table(bytes) = &c.env.payload else {
        panic!()
    };
    assert_eq!(decode_ipc(bytes).unwrap().num_rows(), 0);
    let c = combine(vec![part(2, 2, table(&faces))], &MergeHow::Concat, true).unwrap();
    assert_eq!(c.env.payload, table(&faces));
}
