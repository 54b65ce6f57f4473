//! A size cap for the log files of stage processes: their stderr is a file in the run
//! directory, and a stage stuck in a loop of warnings must not fill the disk.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes a process may log before the rest is dropped: `SMARTPIPE_LOG_MAX_BYTES`,
/// default 10 MiB.
pub fn max_log_bytes() -> u64 {
    std::env::var("SMARTPIPE_LOG_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10 << 20)
}

/// Writes to an inner writer until `cap` bytes, then one notice, then nothing.
pub struct CappedWriter<W: Write> {
    inner: W,
    written: Arc<AtomicU64>,
    cap: u64,
}

impl<W: Write> CappedWriter<W> {
    pub fn new(inner: W, written: Arc<AtomicU64>, cap: u64) -> Self {
        CappedWriter {
            inner,
            written,
            cap,
        }
    }
}

impl<W: Write> Write for CappedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let before = self.written.fetch_add(buf.len() as u64, Ordering::SeqCst);
        if before < self.cap {
            self.inner.write_all(buf)?;
            if before + buf.len() as u64 >= self.cap {
                writeln!(
                    self.inner,
                    "[log capped at {} bytes (SMARTPIPE_LOG_MAX_BYTES); later lines dropped]",
                    self.cap
                )?;
            }
        }
        // Dropped bytes count as written: logging must never fail the stage.
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A `MakeWriter`-style factory: every call gives a capped stderr sharing one counter.
#[derive(Clone)]
pub struct CappedStderr {
    written: Arc<AtomicU64>,
    cap: u64,
}

impl CappedStderr {
    pub fn new(cap: u64) -> Self {
        CappedStderr {
            written: Arc::new(AtomicU64::new(0)),
            cap,
        }
    }
    pub fn writer(&self) -> CappedWriter<std::io::Stderr> {
        CappedWriter::new(std::io::stderr(), self.written.clone(), self.cap)
    }
}

/// Logging of a stage process: `tracing` to stderr (its log file), capped at
/// [`max_log_bytes`], text or JSON lines (`SMARTPIPE_LOG_FORMAT=json`), filtered by
/// `RUST_LOG` (default `info`).
pub fn init_stage_logging() {
    let capped = CappedStderr::new(max_log_bytes());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let make = move || capped.writer();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make)
        .with_ansi(false);
    if std::env::var("SMARTPIPE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_the_cap_with_one_notice() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut out = Vec::new();
        {
            let mut w = CappedWriter::new(&mut out, counter.clone(), 10);
            for _ in 0..5 {
                w.write_all(b"abcd").expect("write");
            }
        }
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("abcdabcdabcd"));
        assert_eq!(text.matches("log capped").count(), 1);
        assert!(!text.ends_with("abcd"), "nothing after the notice: {text}");
    }
}
