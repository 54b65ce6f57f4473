//! `table.print {format: parquet}` without losing a row to a killed tail. A Parquet file
//! can be read only once its footer is written, at the end, and cannot be cut back to a
//! row; so each table goes first to a journal beside the file, `<path>.rows.arrows`: an
//! Arrow IPC stream (pyarrow, polars and DuckDB read it as it grows), one record batch
//! per table, flushed after each. The journal counts its bytes like a csv file does
//! ([`CountingFile`]): the tail acknowledges that length, a restarted tail cuts the
//! journal back to its last acknowledgement and goes on, and a failed write (a full
//! disk) leaves it at its last whole table. When the tail finishes, the Parquet file is
//! written from the journal under a temporary name, renamed into place, and the journal
//! removed.

use super::counting_file::CountingFile;
use super::sink::conform;
use super::TableError;
use crate::out_files::{
    beside, describe, reopen_at_acknowledged, temporary_for, written_whole_at, NamedErrors,
};
use crate::StageError;
use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamEncoder;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::cell::Cell;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Rows of a row group of the finished file at most (the writer's default is 1M rows,
/// held in memory until written).
pub const PARQUET_ROW_GROUP_ROWS: usize = 65_536;

/// Rows handed to the Parquet writer at once when the file is written from the journal.
const GATHERED_ROWS: usize = 4096;

/// Why a Parquet output failed; `journal` keeps the rows written so far.
#[derive(Debug, thiserror::Error)]
pub enum ParquetOutError {
    /// The journal cannot be written.
    #[error("its journal {journal} (an Arrow IPC stream of the rows delivered so far, from which the file is written at the end): {detail}")]
    Journal { journal: String, detail: String },
    /// The finished file could not be written from the journal.
    #[error("writing {path} from its journal failed: {detail}; the rows are kept in {journal} (an Arrow IPC stream)")]
    Finish {
        path: String,
        journal: String,
        detail: String,
    },
    /// A table that does not fit the schema of the first: its item is lost.
    #[error(transparent)]
    Table(#[from] TableError),
}

/// The journal being written.
struct Journal {
    out: BufWriter<CountingFile>,
    /// The stream's encoder and schema (the first table's), once a table came.
    encoder: Option<(StreamEncoder, SchemaRef)>,
}

/// A Parquet output and its journal.
pub struct ParquetOut {
    /// Where the file goes (the file a symbolic link at the output's path names).
    path: PathBuf,
    journal_path: PathBuf,
    /// `None` when an earlier process of this tail had finished the file already.
    journal: Option<Journal>,
}

impl ParquetOut {
    /// Open the output at `path`. With `resume_len` (bytes of the journal an earlier
    /// process of this tail had acknowledged), the journal is cut back to it and
    /// continued; otherwise it starts empty. `written` counts the journal's bytes.
    pub fn open(
        path: &Path,
        resume_len: Option<u64>,
        written: Rc<Cell<u64>>,
    ) -> Result<ParquetOut, StageError> {
        let journal_path = beside(path, protocol::functions::PARQUET_JOURNAL_SUFFIX);
        let target = written_whole_at(path)?;
        let io = |e: std::io::Error| StageError::io(journal_path.display(), e);
        let journal = match resume_len.filter(|&len| len > 0) {
            None => {
                let file = std::fs::File::create(&journal_path).map_err(io)?;
                written.set(0);
                Some(Journal {
                    out: BufWriter::new(CountingFile::new(file, written)),
                    encoder: None,
                })
            }
            Some(_) if !journal_path.exists() && target.is_file() => {
                // The earlier process wrote the file from the journal and removed it:
                // everything was acknowledged and is in the file.
                tracing::info!(path = %path.display(), "the earlier process of this tail finished its Parquet file");
                None
            }
            Some(len) => Some(resume(&journal_path, len, written)?),
        };
        Ok(ParquetOut {
            path: target,
            journal_path,
            journal,
        })
    }

    /// Append a table (conformed to the first table's schema) and flush it.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetOutError> {
        let journal_name = self.journal_path.display().to_string();
        let Some(journal) = self.journal.as_mut() else {
            return Err(ParquetOutError::Journal {
                journal: journal_name,
                detail: format!(
                    "an earlier process of this tail finished {} already, yet a table came after it",
                    self.path.display()
                ),
            });
        };
        let fail = |detail: String| ParquetOutError::Journal {
            journal: journal_name.clone(),
            detail,
        };
        let (encoder, schema) = match &mut journal.encoder {
            Some(e) => e,
            None => {
                let schema = batch.schema();
                let encoder = StreamEncoder::try_new(&schema).map_err(|e| fail(e.to_string()))?;
                journal.encoder.insert((encoder, schema))
            }
        };
        let conformed = conform(batch, schema)?;
        let buffers = encoder
            .encode(&conformed)
            .map_err(|e| fail(e.to_string()))?;
        for buffer in &buffers {
            journal
                .out
                .write_all(buffer.as_slice())
                .map_err(|e| fail(e.to_string()))?;
        }
        journal.out.flush().map_err(|e| fail(e.to_string()))
    }

    /// Write the Parquet file from the journal, then remove the journal.
    pub fn finish(mut self) -> Result<(), ParquetOutError> {
        let Some(mut journal) = self.journal.take() else {
            return Ok(());
        };
        let fail = |detail: String| ParquetOutError::Finish {
            path: self.path.display().to_string(),
            journal: self.journal_path.display().to_string(),
            detail,
        };
        journal.out.flush().map_err(|e| fail(e.to_string()))?;
        drop(journal);
        let temporary = temporary_for(&self.path);
        let began = std::time::Instant::now();
        let written = write_parquet(&self.journal_path, &temporary)
            .and_then(|()| std::fs::rename(&temporary, &self.path).map_err(|e| describe(&e)));
        if let Err(detail) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(fail(detail));
        }
        tracing::info!(
            path = %self.path.display(),
            ms = began.elapsed().as_millis() as u64,
            "written from its journal"
        );
        if let Err(e) = std::fs::remove_file(&self.journal_path) {
            tracing::warn!(journal = %self.journal_path.display(), "the journal of a finished Parquet file is left: {e}");
        }
        Ok(())
    }
}

/// Continue the journal at `journal_path` after its first `len` bytes: what came after
/// them was not acknowledged and is sent again.
fn resume(journal_path: &Path, len: u64, written: Rc<Cell<u64>>) -> Result<Journal, StageError> {
    let name = journal_path.display();
    let io = |e: std::io::Error| StageError::io(&name, e);
    let mut file = reopen_at_acknowledged(journal_path, len).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let schema = StreamReader::try_new(BufReader::new(&mut file), None)
        .map_err(|e| StageError::Io {
            path: name.to_string(),
            detail: format!("cannot be read back as an Arrow IPC stream: {e}"),
        })?
        .schema();
    file.seek(SeekFrom::End(0)).map_err(io)?;
    // The schema is in the journal already: an encoder that wrote it (for an empty
    // table, thrown away) adds only record batches.
    let mut encoder = StreamEncoder::try_new(&schema).map_err(|e| StageError::Io {
        path: name.to_string(),
        detail: e.to_string(),
    })?;
    encoder
        .encode(&RecordBatch::new_empty(schema.clone()))
        .map_err(|e| StageError::Io {
            path: name.to_string(),
            detail: e.to_string(),
        })?;
    written.set(len);
    Ok(Journal {
        out: BufWriter::new(CountingFile::new(file, written)),
        encoder: Some((encoder, schema)),
    })
}

/// How much of a journal left by a tail that ended without finishing its file holds whole
/// tables: `len` bytes (the schema and every table read back), `rows` in them; what comes
/// after (a table cut short when its process was stopped) is `cut` bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeJournal {
    pub len: u64,
    pub rows: u64,
    pub cut: u64,
}

/// A reader that counts the bytes its reader has taken from it.
struct CountingReader<R> {
    inner: R,
    taken: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

/// Read the journal at `journal` back, table by table, to where its whole tables end.
pub fn whole_journal(journal: &Path) -> Result<WholeJournal, StageError> {
    let name = journal.display();
    let file = std::fs::File::open(journal).map_err(|e| StageError::io(&name, e))?;
    let size = file.metadata().map_err(|e| StageError::io(&name, e))?.len();
    let mut counted = CountingReader {
        inner: BufReader::new(file),
        taken: 0,
    };
    // The stream reader takes each message whole (no read-ahead of its own): what it has
    // taken after a table is where that table ends.
    let mut reader = match StreamReader::try_new(&mut counted, None) {
        Ok(reader) => reader,
        // Not even the schema is whole: the tail was stopped before its first table.
        Err(_) => {
            return Ok(WholeJournal {
                len: 0,
                rows: 0,
                cut: size,
            })
        }
    };
    let mut rows = 0u64;
    let mut len = reader.get_ref().taken;
    // A table that cannot be read back ends what is whole.
    while let Some(Ok(batch)) = reader.next() {
        rows += batch.num_rows() as u64;
        len = reader.get_ref().taken;
    }
    Ok(WholeJournal {
        len,
        rows,
        cut: size.saturating_sub(len),
    })
}

/// The journal's tables written as one Parquet file at `to`, synced.
fn write_parquet(journal: &Path, to: &Path) -> Result<(), String> {
    let open = std::fs::File::open(journal).map_err(|e| format!("reading the journal: {e}"))?;
    let reader = StreamReader::try_new(BufReader::new(open), None)
        .map_err(|e| format!("reading the journal: {e}"))?;
    let file = std::fs::File::create(to).map_err(|e| describe(&e))?;
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(NamedErrors(file), reader.schema(), Some(props))
        .map_err(|e| e.to_string())?;
    // The journal holds a batch per item, often of one row: the writer is handed them
    // gathered into batches of a few thousand rows (its cost is per batch as much as per
    // row).
    let schema = reader.schema();
    let mut gathered: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    let mut write = |gathered: &mut Vec<RecordBatch>| -> Result<(), String> {
        let batch = arrow_select::concat::concat_batches(&schema, gathered.iter())
            .map_err(|e| e.to_string())?;
        gathered.clear();
        writer.write(&batch).map_err(|e| e.to_string())
    };
    for batch in reader {
        let batch = batch.map_err(|e| format!("reading the journal: {e}"))?;
        rows += batch.num_rows();
        gathered.push(batch);
        if rows >= GATHERED_ROWS {
            write(&mut gathered)?;
            rows = 0;
        }
    }
    if !gathered.is_empty() {
        write(&mut gathered)?;
    }
    let file = writer.into_inner().map_err(|e| e.to_string())?;
    file.0.sync_all().map_err(|e| describe(&e))
}
