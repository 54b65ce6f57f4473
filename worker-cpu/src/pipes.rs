//! The pipes to and from ffmpeg: a 720p RGB frame through Linux's default 64 KiB pipe is
//! dozens of wake-ups of ffmpeg and of the stage (43 a frame); a pipe of 1 MiB (the
//! default largest size an unprivileged process may ask for) takes a few. Measured on the
//! faces app: ffmpeg and the video source 0.3 ms less CPU per frame (BENCHMARKS.md, "Models,
//! run 12").

use std::os::fd::AsFd;

/// The size asked for.
const PIPE_BYTES: i32 = 1 << 20;

/// Asks for a bigger buffer on the pipe `fd`. Only a hint: a system that refuses (a lower
/// `/proc/sys/fs/pipe-max-size`, a file that is not a pipe) keeps the default, which works.
pub fn widen<F: AsFd>(fd: F) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_widened_and_anything_else_is_left_alone() {
        let (read, write) = nix::unistd::pipe().expect("a pipe");
        widen(&read);
        let size = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("size");
        let most = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(0);
        if most >= PIPE_BYTES {
            assert_eq!(size, PIPE_BYTES);
        } else {
            assert!(size > 0, "the default pipe is kept");
        }
        // Not a pipe: no error, nothing changes.
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        widen(&file);
    }
}
