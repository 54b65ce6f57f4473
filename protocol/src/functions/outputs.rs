//! Where the outputs of `table.print` and `image.show` go: the journals a restarted tail
//! continues from, resumable video containers, and paths that are URLs (streamed, not written).

/// What a `table.print` Parquet file's path gets appended to name the journal (an Arrow
/// IPC stream) its rows wait in until the tail ends.
pub const PARQUET_JOURNAL_SUFFIX: &str = ".rows.arrows";
/// The same for a pretty table written to a file (JSON arrays of cells).
pub const PRETTY_JOURNAL_SUFFIX: &str = ".rows.jsonl";

/// What an `image.show` video's path gets appended to name the folder its segments wait
/// in until the tail ends (`out.mp4.segments/`), when its container can be resumed.
pub const VIDEO_SEGMENTS_SUFFIX: &str = ".segments";

/// How a video a restarted tail continues is encoded: in Matroska segments of `codec`
/// (what ffmpeg picks for the file's extension), joined without re-encoding into a file
/// of `muxer` at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumableVideo {
    pub codec: &'static str,
    pub muxer: &'static str,
}

/// The segments of an `image.show` video at `path`, for the containers whose codec goes
/// into Matroska and back without re-encoding; `None` for others (`.gif`, `.flv`…),
/// which a restarted tail starts over (the earlier file kept as a part).
pub fn resumable_video(path: &str) -> Option<ResumableVideo> {
    let ext = std::path::Path::new(path)
        .extension()?
        .to_str()?
        .to_ascii_lowercase();
    let (codec, muxer) = match ext.as_str() {
        "mp4" | "m4v" => ("h264", "mp4"),
        "mov" => ("h264", "mov"),
        "mkv" => ("h264", "matroska"),
        "avi" => ("mpeg4", "avi"),
        "webm" => ("vp9", "webm"),
        _ => return None,
    };
    Some(ResumableVideo { codec, muxer })
}

/// The scheme of `path` in lower case when it is a URL of a network protocol
/// (`rtsp://cam/1` → `rtsp`); `None` for a file, `file:` URLs included.
pub fn url_scheme(path: &str) -> Option<String> {
    let (scheme, _) = path.split_once("://")?;
    let is_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (is_scheme && !scheme.eq_ignore_ascii_case("file")).then(|| scheme.to_ascii_lowercase())
}

/// Whether `image.show` streams its video to `path` (a URL of a protocol it streams with).
pub fn streams_to_url(path: &str) -> bool {
    matches!(streamed_video(path), Ok(Some(_)))
}

/// The muxer `image.show` streams its video with to a URL (`rtmp://…` → FLV, `srt://`,
/// `udp://`, `tcp://` → MPEG-TS, `rtsp://` → RTSP, `rtp://` → RTP/MPEG-TS); `Ok(None)` for a
/// file, an error for a URL of another protocol.
pub fn streamed_video(path: &str) -> Result<Option<&'static str>, String> {
    let Some(scheme) = url_scheme(path) else {
        return Ok(None);
    };
    match scheme.as_str() {
        "rtmp" | "rtmps" => Ok(Some("flv")),
        "srt" | "udp" | "tcp" => Ok(Some("mpegts")),
        "rtsp" | "rtsps" => Ok(Some("rtsp")),
        "rtp" => Ok(Some("rtp_mpegts")),
        other => Err(format!(
            "a video is streamed to rtmp, rtmps, rtsp, rtsps, srt, udp, tcp or rtp URLs; '{other}://' is not one of them (write a file, or publish through one of these)"
        )),
    }
}

/// The journal suffix of `table.print` to a file in `format`; `None` for formats written
/// row by row.
pub fn table_journal_suffix(format: &str) -> Option<&'static str> {
    match format {
        "parquet" => Some(PARQUET_JOURNAL_SUFFIX),
        "pretty" => Some(PRETTY_JOURNAL_SUFFIX),
        _ => None,
    }
}

/// What a tail keeps beside an output it writes whole at its end: the journal of a
/// `table.print` Parquet file (`<path>.rows.arrows`) or pretty table (`<path>.rows.jsonl`),
/// or the folder of an `image.show` video's segments (`<path>.segments`). While the tail
/// runs it holds what was delivered; a finished tail removes it, so one found after the
/// tail ended means the output was not finished (a stop at once, a failed end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputJournal {
    /// The output's path, as the task names it.
    pub output: String,
    /// The journal file or segments folder beside it.
    pub journal: String,
    /// What the journal holds, for people ("an Arrow IPC stream of its rows"…).
    pub what: &'static str,
    /// A folder (a video's segments), not a file.
    pub folder: bool,
}

/// Where a pretty `table.print` to stdout keeps its rows until it ends: in the run folder,
/// one journal per replica (`<task>#<replica>.table.rows.jsonl`).
pub fn stdout_table_journal(
    run_dir: &std::path::Path,
    task: &str,
    replica: u32,
) -> std::path::PathBuf {
    run_dir.join(format!("{task}#{replica}{STDOUT_TABLE_JOURNAL_SUFFIX}"))
}

/// The end of the name of a stdout table's journal ([`stdout_table_journal`]).
pub const STDOUT_TABLE_JOURNAL_SUFFIX: &str = ".table.rows.jsonl";

/// Whether a tail `function` with `params` prints a pretty table to stdout (its rows wait
/// in [`stdout_table_journal`]).
pub fn prints_pretty_table(
    function: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    function == "table.print"
        && params.get("path").is_none()
        && params
            .get("format")
            .and_then(|v| v.as_str())
            .unwrap_or("pretty")
            == "pretty"
}

/// The journal a tail `function` with `params` keeps for its output, if it keeps one.
pub fn output_journal(
    function: &str,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Option<OutputJournal> {
    let path = params.get("path").and_then(|v| v.as_str())?;
    let (suffix, what) = match function {
        "image.show" => resumable_video(path)
            .map(|_| (VIDEO_SEGMENTS_SUFFIX, "Matroska segments of its frames"))?,
        "table.print" => match params.get("format").and_then(|v| v.as_str()) {
            Some("parquet") => (PARQUET_JOURNAL_SUFFIX, "an Arrow IPC stream of its rows"),
            None | Some("pretty") => (PRETTY_JOURNAL_SUFFIX, "a JSON array per row"),
            Some(_) => return None,
        },
        _ => return None,
    };
    Some(OutputJournal {
        output: path.to_string(),
        journal: format!("{path}{suffix}"),
        what,
        folder: suffix == VIDEO_SEGMENTS_SUFFIX,
    })
}
