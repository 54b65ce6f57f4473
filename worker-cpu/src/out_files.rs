//! Output files that a full disk cannot leave torn or mislabelled: `image.show`'s PNGs
//! are written under a temporary name in their folder and renamed into place only when
//! complete (a failed write removes its temporary file); a write error that is ENOSPC
//! is named as a full disk; and the output filesystem can be asked whether it is full
//! (for an encoder child that died of it, whose pipe then only says "Broken pipe").
//! A restarted tail whose output cannot be resumed (a video) first moves
//! what its earlier process wrote aside ([`set_aside`]) instead of writing over it.

use crate::StageError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Below this many free bytes a filesystem counts as full: an encoder that stopped
/// there stopped because of it.
const NEARLY_FULL_BYTES: u64 = 64 * 1024;

/// Suffix of the temporary files PNGs are written to before their rename.
const PART: &str = ".png.part";

/// Whether `e` is a full disk (ENOSPC, or EDQUOT: the user's quota is full).
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// `e` for people: a full disk said so, with the code to search for.
pub fn describe(e: &std::io::Error) -> String {
    if is_full(e) {
        format!("the disk is full (ENOSPC: {e})")
    } else {
        e.to_string()
    }
}

/// Free bytes for this user on the filesystem holding `path` (or its nearest existing
/// parent); `None` when it cannot be asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let dir = path.ancestors().find(|p| p.is_dir())?;
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Whether the filesystem of `path` is (nearly) full, or an encoder's own complaints
/// say it ran out of space.
pub fn full_disk_at(path: &Path, complaints: &str) -> bool {
    complaints.contains("No space left on device")
        || free_bytes(path).is_some_and(|free| free < NEARLY_FULL_BYTES)
}

/// A writer whose errors name a full disk (`ENOSPC`) as such, for writers (Parquet)
/// that pass the error on as text.
pub struct NamedErrors<W>(pub W);

impl<W: Write> Write for NamedErrors<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(named)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(named)
    }
}

fn named(e: std::io::Error) -> std::io::Error {
    if is_full(&e) {
        std::io::Error::new(e.kind(), describe(&e))
    } else {
        e
    }
}

/// The name of part `k` (1, 2, …) of an output that a restarted tail could not resume:
/// `<stem>.part-<k>.<ext>` beside it (`out.mp4` → `out.part-1.mp4`). The supervisor
/// finds the parts by the same pattern (`supervisor/src/run/apprun/outputs.rs`).
pub fn part_path(path: &Path, k: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.part-{k}.{}", ext.to_string_lossy()),
        None => format!("{stem}.part-{k}"),
    };
    path.with_file_name(name)
}

/// A restarted tail's output that cannot be resumed: move the file its earlier
/// process wrote (if there is one) to the first free [`part_path`] and return where it
/// went, so the new process starts a file of its own instead of writing over the items
/// the earlier one wrote. The earlier process's encoder (ffmpeg outlives a tail killed
/// by SIGKILL: it ends at the end of its input) still has the file open and finishes it
/// under its new name. Only a regular file is moved (not `/dev/null`, a FIFO…).
pub fn set_aside(path: &Path) -> Result<Option<PathBuf>, StageError> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let Some(part) = (1..=u32::MAX)
        .map(|k| part_path(path, k))
        .find(|p| std::fs::symlink_metadata(p).is_err())
    else {
        return Err(StageError::io(
            path.display(),
            "no free name for its earlier part",
        ));
    };
    std::fs::rename(path, &part).map_err(|e| {
        StageError::io(
            path.display(),
            format!(
                "this tail was restarted and its output cannot be resumed, but moving what the earlier process wrote to {} failed ({}); it is not written over",
                part.display(),
                describe(&e)
            ),
        )
    })?;
    tracing::warn!(
        "this tail was restarted and its output cannot be resumed: what the earlier process wrote is moved to {}, and {} starts over with the items not acknowledged before the restart",
        part.display(),
        path.display()
    );
    Ok(Some(part))
}

/// `path` with `suffix` appended to its file name (`out.parquet` → `out.parquet.rows.arrows`).
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Open the file at `path` (a csv/jsonl output, or the journal of a Parquet or pretty one)
/// that an earlier process of this tail acknowledged `len` bytes of, cut back to them (what
/// came after was not acknowledged and is sent again), positioned at its end. Refused when
/// the file is gone or holds fewer bytes (removed or cut while the app ran): those rows
/// were delivered and cannot be sent again, so going on would pad the file with zeros or
/// drop them without a word.
pub fn reopen_at_acknowledged(path: &Path, len: u64) -> std::io::Result<std::fs::File> {
    use std::io::Seek;
    let mut file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(std::io::Error::other(format!(
                "is gone, but an earlier process of this tail acknowledged {len} bytes of it: the rows delivered there are lost (was it removed while the app ran?)"
            )))
        }
        Err(e) => return Err(e),
    };
    let on_disk = file.metadata()?.len();
    if on_disk < len {
        return Err(std::io::Error::other(format!(
            "holds {on_disk} bytes, fewer than the {len} an earlier process of this tail acknowledged: the rows delivered there are lost (was it cut while the app ran?)"
        )));
    }
    file.set_len(len)?;
    file.seek(std::io::SeekFrom::End(0))?;
    Ok(file)
}

/// Where an output written whole at the end (a Parquet file, a pretty table) goes: `path`,
/// or the file its symbolic link names (the link is written through, as csv writes through
/// it, not replaced). A folder there is refused now, not after the run. The temporary
/// files of it a killed earlier process of this tail left are removed.
pub fn written_whole_at(path: &Path) -> Result<PathBuf, StageError> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).or_else(|_| {
            // A dangling link: the file it names, created at the end, in a folder that
            // must exist now (found missing only then, the run's output would be lost).
            let link = std::fs::read_link(path).map_err(|e| StageError::io(path.display(), e))?;
            let named = match path.parent() {
                Some(dir) => dir.join(link),
                None => link,
            };
            match named.parent() {
                Some(folder) if !folder.as_os_str().is_empty() && !folder.is_dir() => {
                    Err(StageError::io(
                        path.display(),
                        format!(
                            "is a symbolic link to {}, whose folder {} does not exist: the output could not be written there",
                            named.display(),
                            folder.display()
                        ),
                    ))
                }
                _ => Ok(named),
            }
        })?,
        _ => path.to_path_buf(),
    };
    if target.is_dir() {
        return Err(StageError::io(
            path.display(),
            "is a folder, not a file: the output is written as a file of this name",
        ));
    }
    remove_stale_temporaries(&target);
    Ok(target)
}

/// The temporary name an output written whole at the end is written under before it is
/// renamed into place: `<name>.writing-<pid>` beside it.
pub fn temporary_for(target: &Path) -> PathBuf {
    beside(target, &format!(".writing-{}", std::process::id()))
}

/// Remove the temporary files ([`temporary_for`]) of `target` that a killed earlier
/// process of this tail left.
fn remove_stale_temporaries(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.writing-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .strip_prefix(&prefix)
            .is_some_and(|pid| pid.parse::<u32>().is_ok());
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Remove the temporary PNGs a killed earlier process of this tail left in `dir`.
pub fn remove_stale_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(PART) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a stale partial PNG")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), "cannot remove a stale partial PNG: {e}")
                }
            }
        }
    }
}

/// Write `rgb` as the PNG `file`: encoded whole, written to a temporary file beside it
/// and renamed into place, so `file` is complete or absent, never cut.
pub fn write_png(file: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), StageError> {
    write_png_as(file, rgb, width, height, image::ExtendedColorType::Rgb8)
}

/// [`write_png`] of pixels in `color` (RGBA for cut-outs).
pub fn write_png_as(
    file: &Path,
    pixels: &[u8],
    width: u32,
    height: u32,
    color: image::ExtendedColorType,
) -> Result<(), StageError> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, width, height, color)
        .map_err(|e| StageError::io(file.display(), e))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let part = file.with_file_name(format!(
        ".{}.{}{PART}",
        name.trim_end_matches(".png"),
        std::process::id()
    ));
    let written = std::fs::File::create(&part)
        .and_then(|mut f| f.write_all(&png))
        .and_then(|()| std::fs::rename(&part, file));
    written.map_err(|e| {
        let removed = match std::fs::remove_file(&part) {
            Ok(()) => "no partial file is left".to_string(),
            Err(r) if r.kind() == std::io::ErrorKind::NotFound => {
                "no partial file is left".to_string()
            }
            Err(r) => format!("and removing {} failed: {r}", part.display()),
        };
        StageError::io(file.display(), format!("{}; {removed}", describe(&e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_png_is_complete_under_its_name_and_no_temporary_file_stays() {
        let dir = std::env::temp_dir().join(format!("out-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("cam-7.png");
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8).collect();
        write_png(&file, &rgb, 4, 3).expect("written");
        let img = image::open(&file).expect("a whole PNG").to_rgb8();
        assert_eq!((img.width(), img.height()), (4, 3));
        assert_eq!(img.into_raw(), rgb);
        std::fs::write(dir.join(".cam-8.99.png.part"), b"torn").expect("stale part");
        remove_stale_parts(&dir);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["cam-7.png".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A symbolic link naming a file not made yet is written through; one naming a file
    /// in a folder that does not exist is refused when the tail opens it, not after the
    /// run (the Parquet file, table or video would be lost then).
    #[test]
    fn a_link_to_a_file_in_a_missing_folder_is_refused_when_the_output_opens() {
        let dir = std::env::temp_dir().join(format!("out-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let to_be_made = dir.join("rows.parquet");
        std::os::unix::fs::symlink(dir.join("real.parquet"), &to_be_made).expect("link");
        assert_eq!(
            written_whole_at(&to_be_made).expect("written through"),
            dir.join("real.parquet")
        );
        let into_nowhere = dir.join("v.mp4");
        std::os::unix::fs::symlink(dir.join("gone/v.mp4"), &into_nowhere).expect("link");
        let refused = written_whole_at(&into_nowhere)
            .expect_err("refused")
            .to_string();
        assert!(
            refused.contains("whose folder")
                && refused.contains("gone")
                && refused.contains("does not exist"),
            "{refused}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_restarted_output_is_moved_to_the_first_free_part_name() {
        let dir = std::env::temp_dir().join(format!("out-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let out = dir.join("v.mp4");
        assert_eq!(part_path(&out, 2), dir.join("v.part-2.mp4"));
        assert_eq!(part_path(&dir.join("raw"), 1), dir.join("raw.part-1"));
        assert_eq!(set_aside(&out).expect("nothing to move"), None);
        std::fs::write(&out, b"first").expect("first");
        assert_eq!(
            set_aside(&out).expect("moved"),
            Some(dir.join("v.part-1.mp4"))
        );
        std::fs::write(&out, b"second").expect("second");
        assert_eq!(
            set_aside(&out).expect("moved"),
            Some(dir.join("v.part-2.mp4"))
        );
        assert!(!out.exists());
        let read = |name: &str| std::fs::read(dir.join(name)).expect("part");
        assert_eq!(read("v.part-1.mp4"), b"first");
        assert_eq!(read("v.part-2.mp4"), b"second");
        // Only regular files move.
        std::fs::create_dir(&out).expect("a folder under the name");
        assert_eq!(set_aside(&out).expect("left alone"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn enospc_is_named_as_a_full_disk() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(describe(&full).starts_with("the disk is full (ENOSPC: "));
        let other = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!describe(&other).contains("ENOSPC"));
        assert!(free_bytes(&std::env::temp_dir()).is_some());
    }
}
