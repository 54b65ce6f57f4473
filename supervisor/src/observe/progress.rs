//! Progress of a finite run: a bar with rate and ETA on a terminal, a plain line every
//! few seconds otherwise (logs, CI).

use media::list_images;
use protocol::functions::params::{self, parse};
use protocol::functions::{self, Builtin};
use protocol::spec::{AppSpec, TaskKind};
use std::io::Write;
use std::time::{Duration, Instant};

/// Items the app's sources will emit, when every source is finite and countable.
pub fn expected_items(app: &AppSpec) -> Option<u64> {
    let mut total = 0;
    for t in app.tasks.iter().filter(|t| t.kind == TaskKind::Head) {
        let p = &t.params;
        total += match functions::builtin(&t.function) {
            Some(Builtin::ImageGen) => parse::<params::ImageGen>(p).ok()?.count,
            Some(Builtin::BenchBlob) => parse::<params::BenchBlob>(p).ok()?.count,
            Some(Builtin::SourceImages) => {
                let source = parse::<params::SourceImages>(p).ok()?;
                list_images(&source.path).ok()?.len() as u64
            }
            Some(Builtin::SourceVideo) => {
                let source = parse::<params::SourceVideo>(p).ok()?;
                let frames = crate::plan::source_probe::announced_frames(&source);
                match (source.limit, frames) {
                    (Some(l), Some(f)) => l.min(f),
                    (Some(l), None) => l,
                    (None, f) => f?,
                }
            }
            _ => return None,
        };
    }
    Some(total)
}

pub struct Progress {
    total: Option<u64>,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
    drawn: bool,
    /// stderr, or that of the command following the app in the daemon.
    out: Box<dyn Write + Send>,
}

impl Progress {
    pub fn new(total: Option<u64>) -> Progress {
        let (out, terminal): (Box<dyn Write + Send>, bool) =
            match crate::env::appenv::console().and_then(|c| Some((c.stderr().ok()?, c))) {
                Some((err, console)) => (Box::new(err), console.stderr_is_terminal()),
                None => (
                    Box::new(std::io::stderr()),
                    nix::unistd::isatty(std::io::stderr()).unwrap_or(false),
                ),
            };
        Progress {
            total,
            started: Instant::now(),
            last: None,
            terminal,
            drawn: false,
            out,
        }
    }

    /// Show `done` replies so far, at most every 200 ms (terminal) or 5 s (otherwise).
    pub fn update(&mut self, done: u64) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let line = match self.total {
            Some(total) if total > 0 => {
                let frac = (done as f64 / total as f64).min(1.0);
                let eta = if rate > 0.0 {
                    format!("{:.0} s", total.saturating_sub(done) as f64 / rate)
                } else {
                    "?".into()
                };
                if self.terminal {
                    let width = 30;
                    let filled = (frac * width as f64) as usize;
                    format!(
                        "\r[{}{}] {done}/{total} {:>5.1}% {rate:.1} items/s ETA {eta}   ",
                        "=".repeat(filled),
                        " ".repeat(width - filled),
                        frac * 100.0
                    )
                } else {
                    format!(
                        "progress: {done}/{total} items ({:.1}%), {rate:.1} items/s, ETA {eta}\n",
                        frac * 100.0
                    )
                }
            }
            _ if self.terminal => format!("\r{done} items, {rate:.1} items/s   "),
            _ => format!("progress: {done} items, {rate:.1} items/s\n"),
        };
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
        self.drawn = true;
    }

    /// End the bar's line so the summary starts on its own.
    pub fn finish(&mut self) {
        if self.terminal && self.drawn {
            let _ = self.out.write_all(b"\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_items_counts_finite_sources() {
        let app = protocol::validate::load_app(
            r#"{"name": "p", "tasks": [
                {"name": "a", "kind": "head", "function": "image.gen", "params": {"width": 2, "height": 2, "count": 7}},
                {"name": "b", "kind": "head", "function": "bench.blob", "params": {"bytes": 8, "count": 5}},
                {"name": "t", "kind": "tail", "function": "table.print", "inputs": ["a", "b"]}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(expected_items(&app), Some(12));
    }
}
