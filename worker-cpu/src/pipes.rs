//! The pipes to and from ffmpeg: a 720p RGB frame through Linux's default 64 KiB pipe is
//! dozens of wake-ups of ffmpeg and of the stage (43 a frame). A pipe that holds a whole
//! frame lets ffmpeg write it without waiting for the stage to read: Linux lets a process
//! with `CAP_SYS_RESOURCE` (root) ask for more than `/proc/sys/fs/pipe-max-size`; any
//! other gets that limit (1 MiB by default), which still takes a frame in a few turns.
//! Measured on the faces app: 1 MiB took 0.3 ms of CPU a frame off ffmpeg and the video
//! source (BENCHMARKS.md, "Models, run 12"); a whole frame, BENCHMARKS.md session 36.

use std::os::fd::AsFd;

/// The size asked for when a whole frame is not allowed (the default largest size an
/// unprivileged process may ask for).
const PIPE_BYTES: usize = 1 << 20;

/// The most asked for, whatever the frame (kernel memory, per pipe).
const PIPE_MOST: usize = 32 << 20;

/// Asks for a buffer on the pipe `fd` that holds a frame of `frame_bytes` (1 MiB where
/// that is refused). Only a hint: a system that refuses both (a lower
/// `/proc/sys/fs/pipe-max-size`, a file that is not a pipe) keeps the default, which works.
pub fn widen<F: AsFd>(fd: F, frame_bytes: usize) {
    let whole = frame_bytes.clamp(PIPE_BYTES, PIPE_MOST);
    for size in [whole, PIPE_BYTES] {
        let Ok(size) = i32::try_from(size) else {
            continue;
        };
        if nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(size)).is_ok() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe_size(frame_bytes: usize) -> usize {
        let (read, write) = nix::unistd::pipe().expect("a pipe");
        widen(&read, frame_bytes);
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETPIPE_SZ).expect("size") as usize
    }

    #[test]
    fn a_pipe_is_widened_to_a_frame_where_allowed_and_anything_else_is_left_alone() {
        let most = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let frame = 1280 * 720 * 3;
        let size = pipe_size(frame);
        // A whole frame (the kernel rounds up to a power of two pages), else 1 MiB where
        // the system's limit allows it, else the default.
        if size >= frame {
            assert!(size < 2 * frame + 4096, "{size}");
        } else if most >= PIPE_BYTES {
            assert_eq!(size, PIPE_BYTES);
        } else {
            assert!(size > 0, "the default pipe is kept");
        }
        // A small frame still gets the 1 MiB pipe (where allowed).
        if most >= PIPE_BYTES {
            assert_eq!(pipe_size(64 * 64 * 3), PIPE_BYTES);
        }
        // Not a pipe: no error, nothing changes.
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        widen(&file, frame);
    }
}
