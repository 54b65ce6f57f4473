//! `table.print`: fed with frames, one row per frame (source, seq, width, height,
//! latency_ms); fed with a detection table (alone or beside its frame), one row per
//! detection with every column of the table (`source` and `seq` added from the item
//! when a `table.select` left them out). Written as a pretty table (at the end),
//! CSV, JSON lines (lists such as landmarks as JSON arrays) or Parquet (to `path`,
//! all rows in one file with the schema of the first table, through a journal that a
//! restarted tail resumes), to stdout or a file.
//! The writers live in [`crate::table::sink`].

use crate::image::sinks::run_tail;
use crate::table::{decode_ipc, TableError};
use crate::StageError;
use arrow_array::RecordBatch;
use protocol::clock::now_ns;
use protocol::messages::{LossReason, Payload};

pub use crate::table::sink::{
    frame_row, frame_schema, with_item_keys, CsvWriter, JsonLinesWriter, RowWriter, SinkError,
    TableSink, FRAME_COLUMNS,
};

impl From<SinkError> for StageError {
    fn from(e: SinkError) -> StageError {
        match e {
            SinkError::Output { target, detail } => StageError::Io {
                path: target,
                detail,
            },
            SinkError::Table(t) => StageError::Input(t.to_string()),
        }
    }
}

/// Every table of a payload (Arrow IPC bytes) and the size of its first frame.
fn contents<'a>(payload: &'a Payload, tables: &mut Vec<&'a [u8]>, size: &mut Option<(u32, u32)>) {
    match payload {
        Payload::Table(bytes) => tables.push(bytes),
        Payload::Frame { width, height, .. } => {
            size.get_or_insert((*width, *height));
        }
        Payload::Batch(parts) => parts.iter().for_each(|p| contents(p, tables, size)),
        _ => {}
    }
}

/// Run `table.print`.
pub fn run(node: &mut protocol::node::Node) -> Result<(), StageError> {
    let protocol::functions::params::TablePrint {
        format,
        path,
        formulas,
    } = crate::params(node)?;
    if format == "parquet" && path.is_none() {
        return Err(StageError::Param {
            task: node.task.name.clone(),
            param: "path".into(),
            detail: "format parquet writes a file: give its path".into(),
        });
    }
    // A pretty table for stdout waits for the end in a journal in the run folder, one per
    // replica (a best-effort tail may have several, each printing its own table).
    let stdout_journal = protocol::functions::stdout_table_journal(
        std::path::Path::new(&node.setup.run_dir),
        &node.task.name,
        node.setup.replica,
    );
    let mut sink = TableSink::open_resumed(
        &format,
        path.as_deref(),
        node.setup.resume_output_len,
        Some(&stdout_journal),
    )?;
    if formulas == protocol::functions::params::FORMULAS_ESCAPE {
        sink.escape_formulas();
    }
    run_tail(node, |tail, env, _| {
        let (mut tables, mut size) = (Vec::new(), None);
        contents(&env.payload, &mut tables, &mut size);
        let batches: Result<Vec<RecordBatch>, TableError> = if tables.is_empty() {
            let (w, h) = size.unwrap_or((0, 0));
            let latency_ms = now_ns().saturating_sub(env.created_ns) as f64 / 1e6;
            let latency_ms = (latency_ms * 1000.0).round() / 1000.0;
            frame_row(&env.source, env.seq, w, h, latency_ms).map(|b| vec![b])
        } else {
            tables
                .iter()
                .map(|t| decode_ipc(t).and_then(|b| with_item_keys(&b, &env.source, env.seq)))
                .collect()
        };
        let written = batches
            .map_err(SinkError::from)
            .and_then(|bs| bs.iter().try_for_each(|b| sink.write(b)));
        if let Some(len) = sink.written() {
            tail.set_output_len(len);
        }
        match written {
            Ok(()) => Ok(()),
            Err(SinkError::Table(e)) => {
                tracing::warn!(source = %env.source, seq = env.seq, "table not printed ({e}); item lost");
                tail.count_lost(LossReason::BadInput);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    })?;
    Ok(sink.finish()?)
}
