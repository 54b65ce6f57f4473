//! Waiting on ffmpeg's pipes with a deadline. A network stream that stops sending (a
//! camera gone, a server that accepts and then says nothing) leaves ffprobe and ffmpeg
//! blocked in a read for ever, and whoever reads their pipes with them: these waits end.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Whether `fd` has something to read (data, or its writer's end: a read then returns 0)
/// within `timeout`. A signal interrupting the wait counts as nothing yet: callers wait
/// again for what is left of their own deadline.
pub fn readable_within(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(poll_ms(timeout))) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// `poll`'s timeout for a wait of `d`: whole milliseconds rounded up
/// ([`protocol::clock::whole_ms_up`]: no spin before a deadline), at most `u16::MAX`.
fn poll_ms(d: Duration) -> u16 {
    u16::try_from(protocol::clock::whole_ms_up(d).as_millis()).unwrap_or(u16::MAX)
}

/// Run `cmd` to its end and collect what it printed, as [`Command::output`] does, unless it
/// takes longer than `deadline`: then it is killed and `None` comes back.
pub fn output_within(cmd: &mut Command, deadline: Duration) -> std::io::Result<Option<Output>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let collected = collect_within(&mut child, deadline);
    if !matches!(collected, Ok(Some(_))) {
        // Timed out, or a pipe failed: nothing more will be read from it.
        let _ = child.kill();
    }
    let status = child.wait()?;
    Ok(collected?.map(|(stdout, stderr)| Output {
        status,
        stdout,
        stderr,
    }))
}

/// Read a child's stdout and stderr to their ends, both at once (a full stderr pipe would
/// block a child that has more to say), until `deadline`.
fn collect_within(
    child: &mut Child,
    deadline: Duration,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("the child's output is not piped"));
    };
    let end = Instant::now() + deadline;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut chunk = [0u8; 8192];
    while out_open || err_open {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let ms = poll_ms(left);
        let mut fds = Vec::with_capacity(2);
        if out_open {
            fds.push(PollFd::new(stdout.as_fd(), PollFlags::POLLIN));
        }
        if err_open {
            fds.push(PollFd::new(stderr.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut ready = ready.into_iter();
        if out_open && ready.next() == Some(true) {
            out_open = read_some(&mut stdout, &mut chunk, &mut out)?;
        }
        if err_open && ready.next() == Some(true) {
            err_open = read_some(&mut stderr, &mut chunk, &mut err)?;
        }
    }
    Ok(Some((out, err)))
}

/// One read of a pipe poll said was ready, appended to `into`; `false` at its end.
fn read_some(pipe: &mut impl Read, chunk: &mut [u8], into: &mut Vec<u8>) -> std::io::Result<bool> {
    match pipe.read(chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            into.extend_from_slice(&chunk[..n]);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_ends_in_time_gives_its_whole_output() {
        // More than a pipe holds on each stream: both are read as they fill.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "head -c 200000 /dev/zero; head -c 150000 /dev/zero >&2; exit 3",
        ]);
        let out = output_within(&mut cmd, Duration::from_secs(30))
            .expect("runs")
            .expect("in time");
        assert_eq!((out.stdout.len(), out.stderr.len()), (200_000, 150_000));
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn a_command_that_says_nothing_is_killed_at_its_deadline() {
        // `sleep` keeps the pipes open and silent, as ffprobe on a stream that sends nothing.
        let mut cmd = Command::new("sleep");
        cmd.arg("600");
        let started = Instant::now();
        let out = output_within(&mut cmd, Duration::from_millis(200)).expect("runs");
        assert!(out.is_none(), "timed out");
        // Killed, not waited for: far less than the 600 s it would have slept.
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_silent_pipe_is_not_readable_and_a_closed_one_is() {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let quick = Duration::from_millis(10);
        assert!(!readable_within(reader.as_fd(), quick).expect("poll"));
        drop(writer);
        assert!(
            readable_within(reader.as_fd(), quick).expect("poll"),
            "its end"
        );
    }

    #[test]
    fn a_wait_polls_for_whole_milliseconds_rounded_up() {
        // A sub-millisecond rest of a deadline must sleep, not poll with 0 and spin.
        assert_eq!(poll_ms(Duration::ZERO), 0);
        assert_eq!(poll_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_ms(Duration::from_micros(900)), 1);
        assert_eq!(poll_ms(Duration::from_millis(1)), 1);
        assert_eq!(poll_ms(Duration::from_micros(199_400)), 200);
        assert_eq!(poll_ms(Duration::from_secs(3600)), u16::MAX);
    }

    #[test]
    fn waiting_out_a_silent_pipe_sleeps_instead_of_spinning() {
        // What the video source does for a stream that stalls: wait for what is left of a
        // deadline, again and again. Rounded down, the last part of each wait was a
        // poll(0) spin: tens of calls where a few do.
        let (reader, _writer) = std::io::pipe().expect("pipe");
        let deadline = Instant::now() + Duration::from_micros(20_500);
        let mut polls = 0;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!readable_within(reader.as_fd(), left).expect("poll"));
            polls += 1;
        }
        assert!(polls <= 3, "{polls} polls for one 20.5 ms wait");
    }
}
