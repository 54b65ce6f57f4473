//! Logging of stage processes: a size cap for their log files (their stderr is a file in
//! the run directory, and a stage stuck in a loop of warnings must not fill the disk), and
//! the last warning each thread logged, which a stage's counters keep as the example of
//! why it dropped bad input (the run's summary quotes it, so nobody has to open the logs
//! to learn why an app delivered nothing).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

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
/// `RUST_LOG` (default `info`); warnings are also kept for [`take_last_warning`] whatever
/// `RUST_LOG` says.
pub fn init_stage_logging() {
    let capped = CappedStderr::new(max_log_bytes());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let make = move || capped.writer();
    let text = tracing_subscriber::fmt::layer()
        .with_writer(make)
        .with_ansi(false);
    let file: Box<dyn Layer<_> + Send + Sync> =
        if std::env::var("SMARTPIPE_LOG_FORMAT").is_ok_and(|f| f == "json") {
            Box::new(text.json().with_filter(filter))
        } else {
            Box::new(text.with_filter(filter))
        };
    tracing_subscriber::registry()
        .with(file)
        .with(LastWarning.with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .init();
}

/// Longest warning kept, in bytes (a warning quoting a whole table stays readable).
const MAX_WARNING_BYTES: usize = 400;

thread_local! {
    static LAST_WARNING: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The last warning (or error) this thread logged since the previous call, as one line:
/// its message, then its fields (`source=… seq=…`). `None` where none was logged since,
/// or where logging is not set up by [`init_stage_logging`] (tests, other programs).
pub fn take_last_warning() -> Option<String> {
    LAST_WARNING.with(|w| w.borrow_mut().take())
}

/// Keeps each thread's last warning for [`take_last_warning`].
struct LastWarning;

impl<S: tracing::Subscriber> Layer<S> for LastWarning {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut line = OneLine::default();
        event.record(&mut line);
        let mut text = line.message;
        if !line.fields.is_empty() {
            let _ = write!(text, " ({})", line.fields.trim_start());
        }
        if text.len() > MAX_WARNING_BYTES {
            let mut end = MAX_WARNING_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        LAST_WARNING.with(|w| *w.borrow_mut() = Some(text));
    }
}

/// An event's message and its other fields as `name=value`, for [`LastWarning`].
#[derive(Default)]
struct OneLine {
    message: String,
    fields: String,
}

impl tracing::field::Visit for OneLine {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
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

    #[test]
    fn the_last_warning_of_a_thread_is_kept_once_with_its_fields() {
        let subscriber = tracing_subscriber::registry()
            .with(LastWarning.with_filter(tracing_subscriber::filter::LevelFilter::WARN));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not a warning");
            assert_eq!(take_last_warning(), None);
            tracing::warn!(
                file = "a.png",
                seq = 3,
                "cannot decode image: {}",
                "cut short"
            );
            tracing::warn!(source = %"cam", seq = 4u64, "frame 1x1 is too small");
            assert_eq!(
                take_last_warning().as_deref(),
                Some("frame 1x1 is too small (source=cam seq=4)")
            );
            assert_eq!(take_last_warning(), None, "taken once");
            let other = std::thread::spawn(|| {
                let subscriber = tracing_subscriber::registry()
                    .with(LastWarning.with_filter(tracing_subscriber::filter::LevelFilter::WARN));
                tracing::subscriber::with_default(subscriber, || {
                    tracing::warn!("another thread's");
                    take_last_warning()
                })
            })
            .join()
            .expect("thread");
            assert_eq!(other.as_deref(), Some("another thread's"));
            assert_eq!(take_last_warning(), None, "kept per thread");
            tracing::error!("{}", "x".repeat(1000));
            let long = take_last_warning().expect("an error counts");
            assert!(
                long.len() <= MAX_WARNING_BYTES + 3 && long.ends_with('…'),
                "{long}"
            );
        });
    }
}
