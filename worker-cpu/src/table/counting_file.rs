//! A file that counts the bytes that reach it and keeps whole records only: the
//! writers of `table.print` flush after every row (csv, jsonl) or table (the Parquet
//! journal), so what was flushed ends on a record boundary, and a write that fails
//! (a full disk) cuts the file back to it. The count is what a tail acknowledges as its
//! output's length, and what a restarted tail cuts the file back to.

use std::io::Write;

/// A file that counts what reaches it and holds whole rows only: the writers flush
/// after every row, so what was flushed ends on a row boundary. A write that fails
/// (a full disk) cuts the file back to that boundary, and nothing more is written: a
/// torn last row is never left behind.
pub(super) struct CountingFile {
    file: std::fs::File,
    written: std::rc::Rc<std::cell::Cell<u64>>,
    /// Length at the last flush (a row boundary).
    committed: u64,
    /// Why the file was cut back and closed to further writes.
    broken: Option<String>,
}
impl CountingFile {
    pub(super) fn new(
        file: std::fs::File,
        written: std::rc::Rc<std::cell::Cell<u64>>,
    ) -> CountingFile {
        let committed = written.get();
        CountingFile {
            file,
            written,
            committed,
            broken: None,
        }
    }

    /// Cut the file back to its last whole row after `e`; the error to report.
    fn cut_back(&mut self, e: &std::io::Error) -> std::io::Error {
        let cut = self.file.set_len(self.committed).and_then(|()| {
            std::io::Seek::seek(&mut self.file, std::io::SeekFrom::Start(self.committed))
        });
        self.written.set(self.committed);
        let full = e.raw_os_error() == Some(libc::ENOSPC);
        let what = if full {
            format!("the disk is full (ENOSPC: {e})")
        } else {
            format!("cannot write ({e})")
        };
        let kept = match cut {
            Ok(_) => format!("the file keeps its {} bytes of whole rows", self.committed),
            Err(c) => format!("and cutting the torn row off failed too: {c}"),
        };
        let why = format!("{what}; {kept}");
        self.broken = Some(why.clone());
        std::io::Error::new(e.kind(), why)
    }
}
impl Write for CountingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(why.clone()));
        }
        match self.file.write(buf) {
            Ok(n) => {
                self.written.set(self.written.get() + n as u64);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.cut_back(&e)),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(std::io::Error::other(why.clone()));
        }
        self.file.flush()?;
        self.committed = self.written.get();
        Ok(())
    }
}
