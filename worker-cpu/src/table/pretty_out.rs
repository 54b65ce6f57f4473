//! The pretty table of `table.print` (its default format): aligned columns need every
//! row's width, so the table is written when the stream ends. Until then its rows wait in
//! a journal on disk, a line of column names then one JSON array of cells per row, counted
//! like a csv file's bytes ([`CountingFile`]): the tail acknowledges that length, a
//! restarted tail cuts the journal back to it and goes on (the rows before a kill are not
//! lost), and a long run does not hold every row in memory. The table is rendered from the
//! journal in two passes (widths, then rows) to stdout or, through a temporary name, to its
//! file, and the journal removed. A writer made without a journal keeps the rows in memory.

use super::counting_file::CountingFile;
use super::sink::RowWriter;
use serde_json::Value;
use std::cell::Cell;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where the table goes.
pub enum PrettyTarget {
    Stdout,
    /// A file (the one a symbolic link at the output's path names:
    /// [`crate::out_files::written_whole_at`]).
    File(PathBuf),
}

/// Where the rows wait.
enum Rows {
    Memory(Vec<Vec<String>>),
    Journal {
        out: BufWriter<CountingFile>,
        path: PathBuf,
    },
    /// An earlier process of this tail rendered the table and removed its journal.
    Rendered,
}

/// Rows written as an aligned table at the end.
pub struct PrettyWriter {
    target: PrettyTarget,
    columns: Vec<String>,
    rows: Rows,
}

impl PrettyWriter {
    /// Rows kept in memory until the end.
    pub fn in_memory(target: PrettyTarget) -> PrettyWriter {
        PrettyWriter {
            target,
            columns: Vec::new(),
            rows: Rows::Memory(Vec::new()),
        }
    }

    /// Rows kept in the journal at `journal`, its bytes counted in `written`. With
    /// `resume_len` (what an earlier process of this tail acknowledged), the journal is
    /// cut back to it and continued, its columns read from its first line.
    pub fn journaled(
        target: PrettyTarget,
        journal: PathBuf,
        resume_len: Option<u64>,
        written: Rc<Cell<u64>>,
    ) -> std::io::Result<PrettyWriter> {
        let resume_len = resume_len.filter(|&len| len > 0);
        if let Some(parent) = journal.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (file, columns) = match resume_len {
            None => (std::fs::File::create(&journal)?, Vec::new()),
            Some(_) if !journal.exists() => {
                tracing::info!(journal = %journal.display(), "the earlier process of this tail rendered its table");
                return Ok(PrettyWriter {
                    target,
                    columns: Vec::new(),
                    rows: Rows::Rendered,
                });
            }
            Some(len) => {
                let file =
                    crate::out_files::reopen_at_acknowledged(&journal, len).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("{}: {e}", journal.display()))
                    })?;
                (file, read_columns(&journal)?)
            }
        };
        written.set(resume_len.unwrap_or(0));
        Ok(PrettyWriter {
            target,
            columns,
            rows: Rows::Journal {
                out: BufWriter::new(CountingFile::new(file, written)),
                path: journal,
            },
        })
    }

    fn render(
        &mut self,
        rows: &mut dyn Iterator<Item = std::io::Result<Vec<String>>>,
        widths: &[usize],
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w + 2)).collect();
        let rule = format!("+{}+", rule.join("+"));
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(k, w)| format!(" {:<w$} ", cells.get(k).map_or("", |c| c.as_str()), w = *w))
                .collect();
            format!("|{}|", padded.join("|"))
        };
        writeln!(out, "{rule}")?;
        writeln!(out, "{}", line(&self.columns))?;
        writeln!(out, "{rule}")?;
        for row in rows {
            writeln!(out, "{}", line(&row?))?;
        }
        writeln!(out, "{rule}")?;
        out.flush()
    }

    /// Write the table to its target from `rows` (read twice: widths, then the table).
    fn write_table(
        &mut self,
        rows: &mut dyn FnMut() -> std::io::Result<
            Box<dyn Iterator<Item = std::io::Result<Vec<String>>>>,
        >,
    ) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in rows()? {
            for (w, c) in widths.iter_mut().zip(&row?) {
                *w = (*w).max(c.chars().count());
            }
        }
        match &self.target {
            PrettyTarget::Stdout => {
                let stdout = std::io::stdout();
                let mut out = BufWriter::new(stdout.lock());
                let mut iter = rows()?;
                self.render(&mut iter, &widths, &mut out)
            }
            PrettyTarget::File(path) => {
                let path = path.clone();
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let temporary = crate::out_files::temporary_for(&path);
                let written = (|| {
                    let mut out = BufWriter::new(std::fs::File::create(&temporary)?);
                    let mut iter = rows()?;
                    self.render(&mut iter, &widths, &mut out)?;
                    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                    std::fs::rename(&temporary, &path)
                })();
                if written.is_err() {
                    let _ = std::fs::remove_file(&temporary);
                }
                written
            }
        }
    }
}

/// How much of a journal left by a tail that ended without rendering its table holds
/// whole rows: (bytes up to the end of its last whole line, rows in them). A line cut
/// short by a stop is left out; no whole line of columns: (0, 0).
pub fn whole_journal(journal: &Path) -> std::io::Result<(u64, u64)> {
    let mut reader = BufReader::new(std::fs::File::open(journal)?);
    let mut line = Vec::new();
    let (mut len, mut lines) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if lines == 0 && serde_json::from_slice::<Vec<String>>(&line).is_err() {
            return Ok((0, 0));
        }
        len += n as u64;
        lines += 1;
    }
    Ok((len, lines.saturating_sub(1)))
}

/// The column names on the journal's first line.
fn read_columns(journal: &Path) -> std::io::Result<Vec<String>> {
    let mut first = String::new();
    BufReader::new(std::fs::File::open(journal)?).read_line(&mut first)?;
    serde_json::from_str(&first).map_err(|e| {
        std::io::Error::other(format!(
            "{}: its first line is not the table's columns: {e}",
            journal.display()
        ))
    })
}

/// The rows of the journal at `path` (after its line of columns).
fn journal_rows(
    path: &Path,
) -> std::io::Result<Box<dyn Iterator<Item = std::io::Result<Vec<String>>>>> {
    let name = path.display().to_string();
    let lines = BufReader::new(std::fs::File::open(path)?).lines().skip(1);
    Ok(Box::new(lines.map(move |line| {
        serde_json::from_str(&line?)
            .map_err(|e| std::io::Error::other(format!("{name}: a row that cannot be read: {e}")))
    })))
}

impl RowWriter for PrettyWriter {
    fn start(&mut self, columns: &[String]) -> std::io::Result<()> {
        self.columns = columns.to_vec();
        if let Rows::Journal { out, .. } = &mut self.rows {
            writeln!(out, "{}", Value::from(columns.to_vec()))?;
            out.flush()?;
        }
        Ok(())
    }

    fn row(&mut self, _: &[String], values: &[Value]) -> std::io::Result<()> {
        let cells: Vec<String> = values.iter().map(super::sink::cell).collect();
        match &mut self.rows {
            Rows::Memory(rows) => rows.push(cells),
            Rows::Journal { out, .. } => {
                writeln!(out, "{}", Value::from(cells))?;
                out.flush()?;
            }
            Rows::Rendered => {
                return Err(std::io::Error::other(
                    "an earlier process of this tail rendered the table already, yet a row came after it",
                ))
            }
        }
        Ok(())
    }

    fn resumed_columns(&self) -> Option<Vec<String>> {
        (!self.columns.is_empty()).then(|| self.columns.clone())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match std::mem::replace(&mut self.rows, Rows::Rendered) {
            Rows::Rendered => Ok(()),
            Rows::Memory(rows) => {
                let rows = std::rc::Rc::new(rows);
                self.write_table(&mut || {
                    let rows = rows.clone();
                    Ok(Box::new((0..rows.len()).map(move |k| Ok(rows[k].clone()))))
                })
            }
            Rows::Journal { mut out, path } => {
                out.flush()?;
                drop(out);
                self.write_table(&mut || journal_rows(&path)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "writing the table failed: {e}; its rows are kept in {}",
                            path.display()
                        ),
                    )
                })?;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(journal = %path.display(), "the journal of a rendered table is left: {e}");
                }
                Ok(())
            }
        }
    }
}
