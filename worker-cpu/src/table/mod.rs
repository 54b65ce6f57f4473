//! Tables: the detection-table schema and its Arrow IPC form, the `table.filter`
//! predicate language, `select` / `merge`, the stage runners of `table.filter`,
//! `table.select` and `table.merge`, cell values for printing, and drawing
//! detections on frames.
//!
//! A table travels as `Payload::Table` (an Arrow IPC stream holding one record
//! batch), alone or inside a `Payload::Batch` beside the frame it describes.

mod counting_file;
pub mod detections;
pub mod draw;
pub mod ops;
pub mod parquet_out;
pub mod predicate;
pub mod pretty_out;
pub mod print;
pub mod sink;
pub mod skeleton;
mod stage;
pub mod track;
pub mod values;

pub use detections::{
    decode_ipc, detections_batch, detections_schema, encode_ipc, rows_of, DetectionRow, Extras,
};
pub use draw::draw_detections;
pub use ops::{merge, select, MergeHow};
pub use predicate::{filter, Evaluate, Predicate, PredicateError};
pub use stage::{run_filter, run_merge, run_select};

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

/// What can go wrong with a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("unknown column '{name}' (the table has: {available})")]
    UnknownColumn { name: String, available: String },
    #[error("column '{column}': {detail}")]
    Column { column: String, detail: String },
    #[error(transparent)]
    Predicate(#[from] PredicateError),
    #[error("merge: {0}")]
    Merge(String),
}

/// The column names of a batch, comma separated (for error messages).
pub fn column_list(batch: &RecordBatch) -> String {
    let names: Vec<&str> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    if names.is_empty() {
        "no columns".into()
    } else {
        names.join(", ")
    }
}

/// The index of a column, or an error naming it and listing the others.
pub fn column_index(batch: &RecordBatch, name: &str) -> Result<usize, TableError> {
    batch
        .schema_ref()
        .index_of(name)
        .map_err(|_| TableError::UnknownColumn {
            name: name.to_string(),
            available: column_list(batch),
        })
}

#[cfg(test)]
mod tests;
