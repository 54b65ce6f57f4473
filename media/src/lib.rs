//! `media`: the media helpers both the workers and the supervisor need — the image files
//! of a `source.images` path, an image's size from its header, a video's size and frame
//! count from ffprobe, and which ffmpeg programs to run. It is small on purpose: the
//! supervisor plans with it without linking a decoder, Arrow or Parquet (decoding stays in
//! `worker-cpu`).

mod header;
mod video;
mod wait;

use std::path::{Path, PathBuf};

pub use header::image_size;
pub use video::{
    count_video_packets, is_live_protocol, is_url, probe_deadline, probe_video, probe_video_info,
    shown, VideoInfo,
};
pub use wait::readable_within;

/// Why a media path or probe failed; the texts name the path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MediaError {
    /// A path that cannot be read or holds no media.
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    /// ffmpeg or ffprobe could not be run.
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
    /// A file ffprobe could read but that is not a usable video.
    #[error("{0}")]
    NotVideo(String),
}

impl MediaError {
    fn io(path: impl std::fmt::Display, detail: impl std::fmt::Display) -> MediaError {
        MediaError::Io {
            path: path.to_string(),
            detail: detail.to_string(),
        }
    }
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Whether `path` names a PNG or JPEG file by its extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files of a `source.images` path: a folder (its PNG/JPEG files) or a
/// glob, sorted by name. An entry that is not a readable regular file (a dangling
/// symbolic link, a FIFO) is listed all the same: the source skips it and counts it as
/// bad input, naming it, instead of leaving it out unsaid.
pub fn list_images(path: &str) -> Result<Vec<PathBuf>, MediaError> {
    let p = Path::new(path);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        std::fs::read_dir(p)
            .map_err(|e| MediaError::io(path, e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|f| is_image(f) && !f.is_dir())
            .collect()
    } else if path.contains("**") {
        walk_glob(path)?
    } else if path.contains(['*', '?', '[']) {
        glob::glob(path)
            .map_err(|e| MediaError::io(path, format!("bad glob pattern: {e}")))?
            .filter_map(Result::ok)
            .filter(|f| !f.is_dir())
            .collect()
    } else if p.is_file() {
        vec![p.to_path_buf()]
    } else if let Some(kind) = special_file(p) {
        return Err(MediaError::io(
            path,
            format!("is a {kind}, not an image file or a folder of them"),
        ));
    } else {
        return Err(MediaError::io(path, "no such file or folder"));
    };
    files.sort();
    if files.is_empty() {
        return Err(MediaError::io(path, "no PNG or JPEG files found"));
    }
    Ok(files)
}

/// Deepest folder a `**` pattern descends into below its fixed part.
const MAX_GLOB_DEPTH: usize = 64;

/// The files matching a `**` pattern: a walk from the pattern's fixed leading folders that
/// enters every real folder once (a symbolic link back up the tree would otherwise be
/// followed round and round, and one file found under many names).
fn walk_glob(pattern: &str) -> Result<Vec<PathBuf>, MediaError> {
    use std::os::unix::fs::MetadataExt;
    let matcher = glob::Pattern::new(pattern)
        .map_err(|e| MediaError::io(pattern, format!("bad glob pattern: {e}")))?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let fixed: Vec<&str> = pattern
        .split('/')
        .take_while(|c| !c.contains(['*', '?', '[']))
        .collect();
    let root = match fixed.join("/") {
        r if r.is_empty() && pattern.starts_with('/') => PathBuf::from("/"),
        r if r.is_empty() => PathBuf::from("."),
        r => PathBuf::from(r),
    };
    let mut seen_folders = std::collections::HashSet::new();
    let mut seen_files = std::collections::HashSet::new();
    let mut files = Vec::new();
    let mut todo = vec![(root, 0usize)];
    while let Some((folder, depth)) = todo.pop() {
        let Ok(meta) = std::fs::metadata(&folder) else {
            continue;
        };
        if !seen_folders.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let matches = matcher.matches_path_with(&path, options);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    if depth < MAX_GLOB_DEPTH {
                        todo.push((path, depth + 1));
                    }
                }
                Ok(meta) => {
                    if matches && seen_files.insert((meta.dev(), meta.ino())) {
                        files.push(path);
                    }
                }
                // A dangling link: listed, so the source names it as it skips it.
                Err(_) if matches => files.push(path),
                Err(_) => {}
            }
        }
    }
    Ok(files)
}

/// Open `path` for reading only if it is a regular file: opened without blocking (a FIFO
/// put in an image's place would block the reader for ever) and checked on the open file
/// (no race with a swap between a check and the open).
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::File::options()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        // A socket cannot be opened at all (ENXIO, "No such device or address"): say
        // what is there instead.
        Err(e) => {
            return Err(match special_file(path) {
                Some(kind) => std::io::Error::other(format!("is a {kind}, not a regular file")),
                None => e,
            })
        }
    };
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_dir() {
        "folder"
    } else {
        special_kind(kind).unwrap_or("special file")
    };
    Err(std::io::Error::other(format!(
        "is a {what}, not a regular file"
    )))
}

/// `O_NONBLOCK` of Linux (every architecture SmartPipe builds for).
const O_NONBLOCK: i32 = 0o4000;

/// The ffmpeg program: `SMARTPIPE_FFMPEG` or `ffmpeg` on PATH.
pub fn ffmpeg_program() -> String {
    std::env::var("SMARTPIPE_FFMPEG").unwrap_or_else(|_| "ffmpeg".into())
}

pub(crate) fn ffprobe_program() -> String {
    std::env::var("SMARTPIPE_FFPROBE").unwrap_or_else(|_| "ffprobe".into())
}

/// What `path` is when it exists but is neither a regular file nor a folder (a FIFO, a
/// device, a socket): reading one could block forever or never end.
pub fn special_file(path: &Path) -> Option<&'static str> {
    special_kind(std::fs::metadata(path).ok()?.file_type())
}

/// The name of a file type that is neither a regular file nor a folder.
fn special_kind(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        Some("FIFO (named pipe)")
    } else if t.is_char_device() {
        Some("character device")
    } else if t.is_block_device() {
        Some("block device")
    } else if t.is_socket() {
        Some("socket")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_or_device_is_refused_as_a_video_without_reading_it() {
        let dir = std::env::temp_dir().join(format!("media-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("v.mp4");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Nothing writes to the FIFO: a probe that opened it would block here forever.
        let e = probe_video(&fifo.display().to_string()).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("is a FIFO (named pipe), not a video file (or a URL)"),
            "{e}"
        );
        let e = probe_video("/dev/null").unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_recursive_pattern_over_symlink_loops_lists_each_file_once() {
        let dir = std::env::temp_dir().join(format!("media-loops-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("b/sub")).unwrap();
        std::fs::write(dir.join("b/x.png"), b"x").unwrap();
        std::fs::write(dir.join("b/sub/y.png"), b"y").unwrap();
        for (link, to) in [
            ("b/l1", "."),
            ("b/l2", "."),
            ("b/sub/up", ".."),
            ("loop", "b"),
        ] {
            std::os::unix::fs::symlink(to, dir.join(link)).unwrap();
        }
        // Before, the walk followed l1/l2/up/... round and round (until the kernel's
        // 40-link limit, for ever with several loops) and listed x.png under many names.
        let files = list_images(&format!("{}/**/*.png", dir.display())).unwrap();
        let mut names: Vec<_> = files
            .iter()
            .filter_map(|f| f.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["x.png", "y.png"], "{files:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fifo_in_place_of_an_image_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("media-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("f.png");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Nothing writes to it: a plain open would block here for ever.
        let e = open_regular(&fifo).unwrap_err();
        assert!(
            e.to_string()
                .contains("is a FIFO (named pipe), not a regular file"),
            "{e}"
        );
        assert_eq!(image_size(&fifo), None);
        let e = open_regular(&dir).unwrap_err();
        assert!(e.to_string().contains("is a folder"), "{e}");
        // A socket cannot be opened at all: named as what it is, not ENXIO's "No such
        // device or address".
        let socket = dir.join("s.png");
        let _ = std::fs::remove_file(&socket);
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let e = open_regular(&socket).unwrap_err();
        assert!(
            e.to_string().contains("is a socket, not a regular file"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lists_images_of_a_folder_sorted_and_refuses_an_empty_one() {
        let dir = std::env::temp_dir().join(format!("media-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b.PNG", "a.jpg", "notes.txt"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        let files = list_images(&dir.display().to_string()).unwrap();
        let names: Vec<_> = files.iter().filter_map(|f| f.file_name()).collect();
        assert_eq!(names, ["a.jpg", "b.PNG"]);
        // A dangling link and a FIFO named as images are listed (the source counts them
        // as it skips them); a folder named like an image is not.
        std::os::unix::fs::symlink(dir.join("gone.png"), dir.join("c.png")).unwrap();
        nix::unistd::mkfifo(&dir.join("d.jpg"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        std::fs::create_dir_all(dir.join("e.png")).unwrap();
        let listed = |pattern: String| -> Vec<String> {
            list_images(&pattern)
                .unwrap()
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        };
        let all = ["a.jpg", "b.PNG", "c.png", "d.jpg"];
        assert_eq!(listed(dir.display().to_string()), all);
        // A pattern takes what it matches, images or not (the user chose it).
        assert_eq!(
            listed(format!("{}/*.*", dir.display())),
            ["a.jpg", "b.PNG", "c.png", "d.jpg", "notes.txt"]
        );
        assert_eq!(
            listed(format!("{}/**/*.*g", dir.display())),
            ["a.jpg", "c.png", "d.jpg"]
        );
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = list_images(&empty.display().to_string()).unwrap_err();
        assert!(e.to_string().contains("no PNG or JPEG files found"), "{e}");
        let e = list_images("/no/such/folder").unwrap_err();
        assert_eq!(e.to_string(), "/no/such/folder: no such file or folder");
        let e = list_images("/dev/zero").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: is a character device, not an image file or a folder of them"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
