//! Loading an app file: read, parse, validate, and resolve relative paths against
//! the app file's folder.

use anyhow::Context;
use protocol::functions;
use protocol::spec::AppSpec;
use protocol::text::shown_up_to;
use protocol::validate::load_app;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A validated app and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedApp {
    pub spec: AppSpec,
    pub file: PathBuf,
}

/// Read and validate an app; every problem is listed with `FILE:LINE:COL` or the
/// field path.
pub fn load(file: &Path) -> anyhow::Result<LoadedApp> {
    let LoadedApp { mut spec, .. } = load_outputs_only(file)?;
    let faults_allowed =
        crate::env::appenv::var(protocol::messages::ENV_TEST_FAULTS).is_some_and(|v| v == "1");
    if let Some((i, t)) = spec
        .tasks
        .iter()
        .enumerate()
        .find(|(_, t)| functions::builtin(&t.function) == Some(functions::Builtin::TestFault))
    {
        if !faults_allowed {
            anyhow::bail!(
                "{}: tasks[{i}] ({}).function: '{}' injects faults for SmartPipe's own tests and is refused unless {}=1",
                file.display(),
                t.name,
                t.function,
                protocol::messages::ENV_TEST_FAULTS
            );
        }
    }
    let dir = app_dir(file);
    crate::plan::user_stage::prepare(&mut spec, &dir, file)?;
    crate::plan::frame_scale::fill(&mut spec, file)?;
    for chosen in crate::plan::output_rate::fill(&mut spec) {
        tracing::info!("{chosen}");
    }
    Ok(LoadedApp {
        spec,
        file: file.to_path_buf(),
    })
}

/// The folder an app's relative paths are relative to: its file's.
fn app_dir(file: &Path) -> PathBuf {
    file.canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Read and validate an app and resolve its paths, without running its user stages'
/// programs or reading its sources: enough to know its tasks and outputs
/// (`finish-outputs`), even once a source or a user stage's program is gone.
pub fn load_outputs_only(file: &Path) -> anyhow::Result<LoadedApp> {
    let text =
        read_app_file(file).with_context(|| format!("cannot read app file {}", file.display()))?;
    let mut spec = load_app(&text).map_err(|errs| {
        // Messages quote the file's own text: escaped and cut, never raw.
        let lines: Vec<String> = errs
            .0
            .iter()
            .map(|e| {
                let (path, message) = (shown_up_to(&e.path, 200), shown_up_to(&e.message, 400));
                match e.position {
                    Some((l, c)) => format!("  {}:{l}:{c}: {path}: {message}", file.display()),
                    None => format!("  {}: {path}: {message}", file.display()),
                }
            })
            .collect();
        anyhow::anyhow!(
            "{} problem{} in {}:\n{}",
            lines.len(),
            if lines.len() == 1 { "" } else { "s" },
            file.display(),
            lines.join("\n")
        )
    })?;
    resolve_paths(&mut spec, &app_dir(file));
    Ok(LoadedApp {
        spec,
        file: file.to_path_buf(),
    })
}

/// Largest app file read (an app is a few kB of JSON).
pub const MAX_APP_FILE_BYTES: u64 = 1 << 20;

/// The text of an app file: only a regular file (a device, FIFO or socket could block
/// or never end), of at most [`MAX_APP_FILE_BYTES`].
pub fn read_app_file(file: &Path) -> anyhow::Result<String> {
    let regular = |meta: &std::fs::Metadata| -> anyhow::Result<()> {
        if !meta.is_file() {
            anyhow::bail!(
                "not a regular file ({}); an app file must be a plain JSON file",
                kind_of(meta)
            );
        }
        if meta.len() > MAX_APP_FILE_BYTES {
            anyhow::bail!(
                "{} bytes, more than the {MAX_APP_FILE_BYTES} bytes an app file may have",
                meta.len()
            );
        }
        Ok(())
    };
    // Checked before opening (opening a FIFO blocks) and again on what was opened.
    regular(&std::fs::metadata(file)?)?;
    let opened = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)?;
    regular(&opened.metadata()?)?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_APP_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_APP_FILE_BYTES {
        anyhow::bail!("it grew past the {MAX_APP_FILE_BYTES} bytes an app file may have");
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// Make every path-like parameter absolute, relative to `dir`.
pub fn resolve_paths(spec: &mut AppSpec, dir: &Path) {
    for task in &mut spec.tasks {
        let Some(def) = functions::find(&task.function) else {
            continue;
        };
        for p in def.params {
            if !p.ty.is_path() {
                continue;
            }
            if let Some(serde_json::Value::String(s)) = task.params.get_mut(p.name) {
                if !s.contains("://") && Path::new(s.as_str()).is_relative() {
                    *s = dir.join(s.as_str()).display().to_string();
                }
            }
        }
    }
}
