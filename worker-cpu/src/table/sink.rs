//! The output of `table.print`: tables in, rows out, as a pretty table (written at
//! the end), CSV, JSON lines or Parquet.
//!
//! CSV and pretty output have the columns of the first table; a later table's
//! columns are matched by name (missing ones are empty, extra ones are left out).
//! JSON lines take each table's own columns. Parquet keeps the schema of the first
//! table: a later table is matched by name, missing nullable columns are null, and
//! a column of another type makes that table an error (its item is lost); its rows
//! go through a journal ([`super::parquet_out`]).

use super::counting_file::CountingFile;
use super::parquet_out::{ParquetOut, ParquetOutError};
use super::pretty_out::{PrettyTarget, PrettyWriter};
use super::{values, TableError};
use crate::StageError;
use arrow_array::{
    new_null_array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;

/// Columns of a row written for a frame.
pub const FRAME_COLUMNS: &[&str] = &["source", "seq", "width", "height", "latency_ms"];

/// Writes rows of JSON values in one of the text formats.
pub trait RowWriter {
    /// Once, before any row, with the columns of the output.
    fn start(&mut self, columns: &[String]) -> std::io::Result<()>;
    /// One row: `values[k]` is the value of `columns[k]`.
    fn row(&mut self, columns: &[String], values: &[Value]) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
    /// The columns an earlier process of this tail fixed, when the writer continues its
    /// output and can read them back (the pretty table's journal).
    fn resumed_columns(&self) -> Option<Vec<String>> {
        None
    }
    /// Write text cells a spreadsheet would run as formulas as text (csv only; see
    /// [`formula_safe`]).
    fn escape_formulas(&mut self) {}
}

/// A value as a table cell's text.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// CSV with a header line; fields quoted when needed (lists as JSON arrays).
pub struct CsvWriter<W: Write> {
    out: W,
    /// `table.print {formulas: escape}`: text cells go through [`formula_safe`].
    escape_formulas: bool,
}
impl<W: Write> CsvWriter<W> {
    pub fn new(out: W) -> Self {
        CsvWriter {
            out,
            escape_formulas: false,
        }
    }
    fn text(&self, s: String) -> String {
        if self.escape_formulas {
            formula_safe(s)
        } else {
            s
        }
    }
}

/// A text cell a spreadsheet would take for a formula (it starts with `=`, `+`, `-`, `@`,
/// a tab or a carriage return: CSV injection, OWASP) with a `'` in front, which spreadsheets
/// show as text and do not run. Numbers are never text cells here, so `-1.5` stays a number.
pub fn formula_safe(s: String) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s
    }
}
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
impl<W: Write> RowWriter for CsvWriter<W> {
    fn start(&mut self, columns: &[String]) -> std::io::Result<()> {
        let names: Vec<String> = columns
            .iter()
            .map(|c| csv_field(&self.text(c.clone())))
            .collect();
        writeln!(self.out, "{}", names.join(","))
    }
    fn row(&mut self, _: &[String], values: &[Value]) -> std::io::Result<()> {
        let fields: Vec<String> = values
            .iter()
            .map(|v| match v {
                Value::String(s) => csv_field(&self.text(s.clone())),
                other => csv_field(&cell(other)),
            })
            .collect();
        writeln!(self.out, "{}", fields.join(","))?;
        // Rows are visible as they come (tail -f), not when a buffer fills.
        self.out.flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
    fn escape_formulas(&mut self) {
        self.escape_formulas = true;
    }
}

/// One JSON object per line.
pub struct JsonLinesWriter<W: Write> {
    out: W,
}
impl<W: Write> JsonLinesWriter<W> {
    pub fn new(out: W) -> Self {
        JsonLinesWriter { out }
    }
}
impl<W: Write> RowWriter for JsonLinesWriter<W> {
    fn start(&mut self, _: &[String]) -> std::io::Result<()> {
        Ok(())
    }
    fn row(&mut self, columns: &[String], values: &[Value]) -> std::io::Result<()> {
        let obj: serde_json::Map<String, Value> = columns
            .iter()
            .cloned()
            .zip(values.iter().cloned())
            .collect();
        writeln!(self.out, "{}", Value::Object(obj))?;
        self.out.flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The schema of the rows written for frames.
pub fn frame_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("width", DataType::UInt32, false),
        Field::new("height", DataType::UInt32, false),
        Field::new("latency_ms", DataType::Float64, false),
    ]))
}

/// The one-row table written for a frame.
pub fn frame_row(
    source: &str,
    seq: u64,
    width: u32,
    height: u32,
    latency_ms: f64,
) -> Result<RecordBatch, TableError> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![source])),
        Arc::new(UInt64Array::from(vec![seq])),
        Arc::new(UInt32Array::from(vec![width])),
        Arc::new(UInt32Array::from(vec![height])),
        Arc::new(Float64Array::from(vec![latency_ms])),
    ];
    Ok(RecordBatch::try_new(frame_schema(), columns)?)
}

/// A table with `source` and `seq` columns first, taken from the item where the
/// table has none.
pub fn with_item_keys(
    batch: &RecordBatch,
    source: &str,
    seq: u64,
) -> Result<RecordBatch, TableError> {
    let schema = batch.schema();
    let (mut fields, mut columns): (Vec<Field>, Vec<ArrayRef>) = (Vec::new(), Vec::new());
    let n = batch.num_rows();
    if schema.index_of("source").is_err() {
        fields.push(Field::new("source", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec![source; n])));
    }
    if schema.index_of("seq").is_err() {
        fields.push(Field::new("seq", DataType::UInt64, false));
        columns.push(Arc::new(UInt64Array::from(vec![seq; n])));
    }
    if fields.is_empty() {
        return Ok(batch.clone());
    }
    fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
    columns.extend(batch.columns().iter().cloned());
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// A table conformed to `schema`: columns by name, missing nullable ones as nulls.
pub(super) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, TableError> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        match batch.schema_ref().index_of(f.name()) {
            Ok(i) if batch.column(i).data_type() == f.data_type() => {
                columns.push(batch.column(i).clone())
            }
            Ok(i) => {
                return Err(TableError::Column {
                    column: f.name().clone(),
                    detail: format!(
                        "is {} here but {} in the first table",
                        batch.column(i).data_type(),
                        f.data_type()
                    ),
                })
            }
            Err(_) if f.is_nullable() => {
                columns.push(new_null_array(f.data_type(), batch.num_rows()))
            }
            Err(_) => {
                return Err(TableError::Column {
                    column: f.name().clone(),
                    detail: "is missing here but was in the first table".into(),
                })
            }
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

enum Output {
    Text {
        writer: Box<dyn RowWriter>,
        /// Fixed by the first table (csv, pretty); `None` for jsonl or before it.
        columns: Option<Vec<String>>,
        per_table: bool,
        /// Continuing a file a previous run of this tail started (its header is there).
        resumed: bool,
    },
    Parquet(Box<ParquetOut>),
}

/// The output of a `table.print`: takes tables, writes rows.
pub struct TableSink {
    target: String,
    out: Output,
    started: bool,
    /// Bytes in the output file so far (csv and jsonl files, which write row by row, and
    /// the journal of a Parquet file, table by table).
    written: Option<std::rc::Rc<std::cell::Cell<u64>>>,
}

/// Why a table was not written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output cannot be written: the stage stops.
    #[error("{target}: {detail}")]
    Output { target: String, detail: String },
    /// This table does not fit the output: the item is lost, the stage goes on.
    #[error(transparent)]
    Table(#[from] TableError),
}

impl TableSink {
    /// `table.print {formulas: escape}`: a csv output writes text cells a spreadsheet
    /// would run as formulas as text ([`formula_safe`]); other formats are unchanged.
    pub fn escape_formulas(&mut self) {
        if let Output::Text { writer, .. } = &mut self.out {
            writer.escape_formulas();
        }
    }

    /// Open the output: `path`, or stdout. Parquet needs a path.
    pub fn open(format: &str, path: Option<&str>) -> Result<TableSink, StageError> {
        TableSink::open_resumed(format, path, None, None)
    }

    /// Like [`TableSink::open`]; with `resume_len`, a csv or jsonl file (or the journal of
    /// a Parquet file or pretty table) written by a previous run of this tail is cut back
    /// to that length and continued (what came after it was not acknowledged and is
    /// replayed). A pretty table's rows wait in a journal beside its file, or at
    /// `stdout_journal` when it goes to stdout (without one, in memory).
    pub fn open_resumed(
        format: &str,
        path: Option<&str>,
        resume_len: Option<u64>,
        stdout_journal: Option<&std::path::Path>,
    ) -> Result<TableSink, StageError> {
        let pretty_journal = match (format, path) {
            ("pretty", Some(p)) => Some(crate::out_files::beside(
                std::path::Path::new(p),
                protocol::functions::PRETTY_JOURNAL_SUFFIX,
            )),
            ("pretty", None) => stdout_journal.map(std::path::Path::to_path_buf),
            _ => None,
        };
        let resumable = matches!(format, "csv" | "jsonl" | "parquet") || pretty_journal.is_some();
        let resume_len = resume_len.filter(|_| resumable);
        let file = match path {
            Some(p) if matches!(format, "parquet" | "pretty") => {
                if let Some(parent) = std::path::Path::new(p).parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StageError::io(parent.display(), e))?;
                }
                None
            }
            Some(p) => {
                if let Some(parent) = std::path::Path::new(p).parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StageError::io(parent.display(), e))?;
                }
                Some(match resume_len.filter(|&len| len > 0) {
                    Some(len) => {
                        crate::out_files::reopen_at_acknowledged(std::path::Path::new(p), len)
                            .map_err(|e| StageError::io(p, e))?
                    }
                    None => std::fs::File::create(p).map_err(|e| StageError::io(p, e))?,
                })
            }
            None => None,
        };
        let counter = (resumable && (path.is_some() || pretty_journal.is_some()))
            .then(|| std::rc::Rc::new(std::cell::Cell::new(resume_len.unwrap_or(0))));
        let resumed = resume_len.is_some_and(|len| len > 0);
        let text = |file: Option<std::fs::File>| -> Box<dyn Write> {
            match (file, &counter) {
                (Some(file), Some(written)) => Box::new(std::io::BufWriter::new(
                    CountingFile::new(file, written.clone()),
                )),
                (Some(f), None) => Box::new(std::io::BufWriter::new(f)),
                (None, _) => Box::new(std::io::BufWriter::new(std::io::stdout())),
            }
        };
        let out = match format {
            "csv" => Output::Text {
                writer: Box::new(CsvWriter::new(text(file))),
                columns: None,
                per_table: false,
                resumed,
            },
            "pretty" => {
                let target = match path {
                    Some(p) => PrettyTarget::File(crate::out_files::written_whole_at(
                        std::path::Path::new(p),
                    )?),
                    None => PrettyTarget::Stdout,
                };
                let writer = match (pretty_journal, &counter) {
                    (Some(journal), Some(written)) => {
                        let name = journal.display().to_string();
                        PrettyWriter::journaled(target, journal, resume_len, written.clone())
                            .map_err(|e| StageError::io(name, e))?
                    }
                    _ => PrettyWriter::in_memory(target),
                };
                Output::Text {
                    columns: writer.resumed_columns(),
                    writer: Box::new(writer),
                    per_table: false,
                    resumed,
                }
            }
            "jsonl" => Output::Text {
                writer: Box::new(JsonLinesWriter::new(text(file))),
                columns: None,
                per_table: true,
                resumed,
            },
            "parquet" => match (path, &counter) {
                (Some(p), Some(written)) => Output::Parquet(Box::new(ParquetOut::open(
                    std::path::Path::new(p),
                    resume_len,
                    written.clone(),
                )?)),
                _ => {
                    return Err(StageError::Unsupported(
                        "table.print: format parquet needs a `path`".into(),
                    ))
                }
            },
            other => {
                return Err(StageError::Unsupported(format!(
                    "table.print format '{other}' is not one of pretty, csv, jsonl, parquet"
                )))
            }
        };
        Ok(TableSink {
            target: path.unwrap_or("stdout").to_string(),
            out,
            started: resumed,
            written: counter,
        })
    }

    /// Bytes in the output file after the rows written so far (csv and jsonl files).
    pub fn written(&self) -> Option<u64> {
        self.written.as_ref().map(|w| w.get())
    }

    /// Write every row of a table.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        self.started = true;
        let target = self.target.clone();
        let fail = |e: &dyn std::fmt::Display| SinkError::Output {
            target: target.clone(),
            detail: e.to_string(),
        };
        match &mut self.out {
            Output::Text {
                writer,
                columns,
                per_table,
                resumed,
            } => {
                let names: Vec<String> = batch
                    .schema_ref()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                if columns.is_none() {
                    if !*resumed {
                        writer.start(&names).map_err(|e| fail(&e))?;
                    }
                    *columns = Some(names.clone());
                }
                let rows = values::rows(batch)?;
                let fixed = match (&*columns, *per_table) {
                    (Some(c), false) => c.clone(),
                    _ => names.clone(),
                };
                for row in rows {
                    let aligned: Vec<Value> = if fixed == names {
                        row
                    } else {
                        fixed
                            .iter()
                            .map(|c| {
                                names
                                    .iter()
                                    .position(|n| n == c)
                                    .map(|i| row[i].clone())
                                    .unwrap_or(Value::Null)
                            })
                            .collect()
                    };
                    writer.row(&fixed, &aligned).map_err(|e| fail(&e))?;
                }
                Ok(())
            }
            Output::Parquet(out) => out.write(batch).map_err(|e| match e {
                ParquetOutError::Table(t) => SinkError::Table(t),
                other => fail(&other),
            }),
        }
    }

    /// Flush and close; an output that got nothing has the frame columns.
    pub fn finish(mut self) -> Result<(), SinkError> {
        if !self.started {
            let empty = RecordBatch::new_empty(frame_schema());
            self.write(&empty)?;
        }
        match self.out {
            Output::Text { mut writer, .. } => writer.finish().map_err(|e| SinkError::Output {
                target: self.target.clone(),
                detail: e.to_string(),
            }),
            Output::Parquet(out) => out.finish().map_err(|e| SinkError::Output {
                target: self.target.clone(),
                detail: e.to_string(),
            }),
        }
    }
}
