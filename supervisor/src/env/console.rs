//! The console of a command that follows an app run by the daemon: its standard output
//! (where the app's stages write theirs) and standard error (progress, notes, summary),
//! passed to the daemon as descriptors.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

/// The standard output and error of the command that started an app.
#[derive(Debug)]
pub struct Console {
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Console {
    /// The console of a command that sent these two descriptors.
    pub fn new(stdout: OwnedFd, stderr: OwnedFd) -> Console {
        Console { stdout, stderr }
    }

    /// Where a stage of the app writes its standard output.
    pub fn stage_stdout(&self) -> std::io::Result<Stdio> {
        Ok(Stdio::from(self.stdout.try_clone()?))
    }

    /// The command's stderr, for progress, notes and the summary.
    pub fn stderr(&self) -> std::io::Result<File> {
        Ok(File::from(self.stderr.try_clone()?))
    }

    /// Whether the command's stderr is a terminal (a progress bar, not lines).
    pub fn stderr_is_terminal(&self) -> bool {
        // SAFETY: isatty only inspects the descriptor, which `self` keeps open.
        unsafe { libc::isatty(self.stderr.as_raw_fd()) == 1 }
    }
}
