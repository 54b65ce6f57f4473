//! `table.print`: one row per frame (source, seq, width, height, latency_ms) as a
//! pretty table, CSV or JSON lines, to stdout or a file.

use crate::sinks::run_tail;
use crate::{param, StageError};
use protocol::clock::now_ns;
use serde_json::{json, Value};
use std::io::Write;

/// Columns of a row written for a frame.
pub const FRAME_COLUMNS: &[&str] = &["source", "seq", "width", "height", "latency_ms"];

/// Writes rows in one of the formats.
pub trait RowWriter {
    fn row(&mut self, values: &[Value]) -> std::io::Result<()>;
    fn finish(&mut self) -> std::io::Result<()>;
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// CSV with a header line; fields quoted when needed.
pub struct CsvWriter<W: Write> {
    out: W,
}
impl<W: Write> CsvWriter<W> {
    pub fn new(mut out: W, columns: &[&str]) -> std::io::Result<Self> {
        writeln!(out, "{}", columns.join(","))?;
        Ok(CsvWriter { out })
    }
}
impl<W: Write> RowWriter for CsvWriter<W> {
    fn row(&mut self, values: &[Value]) -> std::io::Result<()> {
        let fields: Vec<String> = values
            .iter()
            .map(|v| {
                let s = cell(v);
                if s.contains([',', '"', '\n']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s
                }
            })
            .collect();
        writeln!(self.out, "{}", fields.join(","))?;
        // Rows are visible as they come (tail -f), not when a buffer fills.
        self.out.flush()
    }
    fn finish(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One JSON object per line.
pub struct JsonLinesWriter<W: Write> {
    out: W,
    columns: Vec<String>,
}
impl<W: Write> JsonLinesWriter<W> {
    pub fn new(out: W, columns: &[&str]) -> Self {
        JsonLinesWriter {
            out,
            columns: columns.iter().map(|c| c.to_string()).collect(),
        }
    }
}
impl<W: Write> RowWriter for JsonLinesWriter<W> {
    fn row(&mut self, values: &[Value]) -> std::io::Result<()> {
        let obj: serde_json::Map<String, Value> = self
            .columns
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

/// An aligned table, written when the stream ends (column widths need every row).
pub struct PrettyWriter<W: Write> {
    out: W,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}
impl<W: Write> PrettyWriter<W> {
    pub fn new(out: W, columns: &[&str]) -> Self {
        PrettyWriter {
            out,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }
}
impl<W: Write> RowWriter for PrettyWriter<W> {
    fn row(&mut self, values: &[Value]) -> std::io::Result<()> {
        self.rows.push(values.iter().map(cell).collect());
        Ok(())
    }
    fn finish(&mut self) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w + 2)).collect();
        let rule = format!("+{}+", rule.join("+"));
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!(" {c:<w$} ", w = *w))
                .collect();
            format!("|{}|", padded.join("|"))
        };
        writeln!(self.out, "{rule}")?;
        writeln!(self.out, "{}", line(&self.columns))?;
        writeln!(self.out, "{rule}")?;
        for row in &self.rows {
            writeln!(self.out, "{}", line(row))?;
        }
        writeln!(self.out, "{rule}")?;
        self.out.flush()
    }
}

/// Make the writer for a format, to a file or stdout.
pub fn open_writer(
    format: &str,
    path: Option<&str>,
    columns: &[&str],
) -> Result<Box<dyn RowWriter>, StageError> {
    let out: Box<dyn Write> = match path {
        Some(p) => {
            if let Some(parent) = std::path::Path::new(p).parent() {
                std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent.display(), e))?;
            }
            let file = std::fs::File::create(p).map_err(|e| StageError::io(p, e))?;
            Box::new(std::io::BufWriter::new(file))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let io = |e: std::io::Error| StageError::io(path.unwrap_or("stdout"), e);
    Ok(match format {
        "csv" => Box::new(CsvWriter::new(out, columns).map_err(io)?),
        "jsonl" => Box::new(JsonLinesWriter::new(out, columns)),
        "pretty" => Box::new(PrettyWriter::new(out, columns)),
        other => {
            return Err(StageError::Unsupported(format!(
                "table.print format '{other}' is not available in this build (use pretty, csv or jsonl)"
            )))
        }
    })
}

/// Run `table.print`.
pub fn run(node: &mut protocol::node::Node) -> Result<(), StageError> {
    let format: String = param(node, "format")?.unwrap_or_else(|| "pretty".into());
    let path: Option<String> = param(node, "path")?;
    let target = path.clone().unwrap_or_else(|| "stdout".into());
    let mut writer = open_writer(&format, path.as_deref(), FRAME_COLUMNS)?;
    run_tail(node, |_, env, frame| {
        let (w, h) = frame.map(|f| (f.width, f.height)).unwrap_or((0, 0));
        let latency_ms = now_ns().saturating_sub(env.created_ns) as f64 / 1e6;
        let row = [
            json!(env.source),
            json!(env.seq),
            json!(w),
            json!(h),
            json!((latency_ms * 1000.0).round() / 1000.0),
        ];
        writer.row(&row).map_err(|e| StageError::io(&target, e))
    })?;
    writer.finish().map_err(|e| StageError::io(&target, e))
}
