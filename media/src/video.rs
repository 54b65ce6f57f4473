//! Probing videos with ffprobe: the size their frames are decoded at (turned as a player
//! shows them), the frames a file announces, and whether a URL is a live stream. A probe of
//! a URL runs within a deadline: a network stream that sends nothing would hold it for ever.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{ffprobe_program, special_file, wait, MediaError};

/// How long a probe of a network stream may take: it answers in a few seconds, and one that
/// accepts the connection and then sends nothing would hold the planner for ever.
/// `SMARTPIPE_PROBE_TIMEOUT_S` sets it (seconds, at least 1). A file is probed without one:
/// counting the packets of a long recording reads all of it.
pub fn probe_deadline() -> Duration {
    let seconds = std::env::var("SMARTPIPE_PROBE_TIMEOUT_S")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(30.0);
    Duration::from_secs_f64(seconds.min(86_400.0))
}

/// ffprobe's `entries` of the first video stream of `path`, in the given output format; a
/// URL's within [`probe_deadline`].
fn ffprobe_first_video(
    entries: &[&str],
    format: &str,
    path: impl AsRef<std::ffi::OsStr>,
) -> Result<std::process::Output, MediaError> {
    let path = path.as_ref();
    let mut cmd = Command::new(ffprobe_program());
    cmd.args(["-v", "error", "-select_streams", "v:0"])
        .args(entries)
        .args(["-of", format])
        .arg(path);
    // A URL's probe has a deadline; a file's has none.
    let deadline = is_url(&path.to_string_lossy()).then(probe_deadline);
    let output = match deadline {
        Some(deadline) => wait::output_within(&mut cmd, deadline),
        None => cmd.stdin(std::process::Stdio::null()).output().map(Some),
    };
    match output {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(MediaError::NotVideo(format!(
            "{}: not a readable video (ffprobe had no answer within {} s: a network stream that sends nothing? SMARTPIPE_PROBE_TIMEOUT_S waits longer)",
            shown(&path.to_string_lossy()),
            deadline.unwrap_or_default().as_secs_f64()
        ))),
        Err(e) => Err(MediaError::Ffmpeg(format!(
            "cannot run ffprobe (is ffmpeg installed?): {e}"
        ))),
    }
}

/// What ffprobe says of a video's first stream: the stored size, the frame count when the
/// container keeps one, and the turn a player gives its frames (a phone's portrait clip is
/// stored landscape with a display rotation of ±90°).
#[derive(Debug, Clone, Copy, PartialEq)]
struct StreamFacts {
    width: u32,
    height: u32,
    frames: Option<u64>,
    /// The stream's or the container's, whichever is known.
    duration_s: Option<f64>,
    /// Frames per second: the average, or the base rate when there is no average.
    frame_rate: Option<f64>,
    rotation_deg: f64,
}

/// A rate as ffprobe writes it (`30000/1001`, `25/1`; `0/0` when unknown).
fn parse_rate(text: &str) -> Option<f64> {
    let (num, den) = text.split_once('/')?;
    let rate = num.trim().parse::<f64>().ok()? / den.trim().parse::<f64>().ok()?;
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

impl StreamFacts {
    /// From ffprobe's `key=value` lines (`-of default=nw=1`); `None` without a size.
    fn parse(text: &str) -> Option<StreamFacts> {
        let mut facts = StreamFacts {
            width: 0,
            height: 0,
            frames: None,
            duration_s: None,
            frame_rate: None,
            rotation_deg: 0.0,
        };
        let mut base_rate = None;
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            match key {
                "width" => facts.width = value.parse().ok()?,
                "height" => facts.height = value.parse().ok()?,
                "nb_frames" => facts.frames = value.parse().ok(),
                "avg_frame_rate" => facts.frame_rate = parse_rate(value),
                "r_frame_rate" => base_rate = parse_rate(value),
                "duration" => {
                    let d = value
                        .parse::<f64>()
                        .ok()
                        .filter(|d| d.is_finite() && *d > 0.0);
                    facts.duration_s = facts.duration_s.or(d);
                }
                // Only the display matrix's turn: another side data's "rotation" (a
                // spherical video's yaw/pitch/roll) is not asked for.
                "rotation" => facts.rotation_deg = value.parse().unwrap_or(0.0),
                _ => {}
            }
        }
        facts.frame_rate = facts.frame_rate.or(base_rate);
        (facts.width > 0 && facts.height > 0).then_some(facts)
    }

    /// Whether a player turns the frames a quarter (ffmpeg's own test: within 1° of 90 or
    /// 270): the frames it decodes are then `height × width`.
    fn quarter_turned(&self) -> bool {
        let turn = self.rotation_deg.rem_euclid(360.0);
        (turn - 90.0).abs() < 1.0 || (turn - 270.0).abs() < 1.0
    }

    /// The size of the frames as shown, which ffmpeg decodes them at.
    fn shown_size(&self) -> (u32, u32) {
        if self.quarter_turned() {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }
}

/// A video as SmartPipe reads it: the size its frames are decoded at (as a player shows
/// them: a quarter-turned phone clip has width and height swapped, as ffmpeg turns its
/// frames upright the way `source.images` turns photos by their EXIF orientation), the
/// frames it announces and its duration, when the file keeps them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub frames: Option<u64>,
    pub duration_s: Option<f64>,
    /// Frames per second (the average of a variable-rate video).
    pub frame_rate: Option<f64>,
}

/// URL schemes of live protocols: what they send is happening now, and a second reader
/// gets what happens then, not the stream from its start.
const LIVE_SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "rtmp", "rtmps", "rtmpt", "rtp", "srt", "udp", "tcp",
];

/// Query parameters whose values are secrets (`?token=…`), masked by [`shown`].
const SECRET_QUERY_KEYS: &[&str] = &[
    "token",
    "access_token",
    "auth",
    "key",
    "apikey",
    "api_key",
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "signature",
    "sig",
];

/// `path` as messages, logs and reports show it: a URL's password (`rtsp://admin:***@cam/1`, a
/// user alone is kept) and the values of secret query parameters masked. A camera's URL often
/// carries its credentials, and logs and run folders are shared.
pub fn shown(path: &str) -> String {
    if !is_url(path) {
        return path.to_string();
    }
    let Some((scheme, rest)) = path.split_once("://") else {
        return path.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("***@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((before, query)) => {
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _))
                        if SECRET_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{k}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{before}?{}", masked.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Whether `path` is a URL of a live protocol (`rtsp://`, `udp://`, …): what it sends is
/// happening now, and it has no end of its own.
pub fn is_live_protocol(path: &str) -> bool {
    protocol::functions::url_scheme(path)
        .is_some_and(|scheme| LIVE_SCHEMES.contains(&scheme.as_str()))
}

impl VideoInfo {
    /// Whether the video at `path` is a live stream: a URL of a live protocol, or one
    /// (HTTP and others) with no known duration. Reading it again does not start it over,
    /// so a restarted source cannot skip to where it was by reading (files and
    /// recordings served over HTTP can).
    pub fn is_live(&self, path: &str) -> bool {
        is_live_protocol(path) || (is_url(path) && self.duration_s.is_none())
    }
}

/// Width, height and (if known) frame count of the first video stream, at the size its
/// frames are decoded (see [`VideoInfo`]).
pub fn probe_video(path: &str) -> Result<(u32, u32, Option<u64>), MediaError> {
    let info = probe_video_info(path)?;
    Ok((info.width, info.height, info.frames))
}

/// What ffprobe finds of the video at `path` (see [`VideoInfo`]).
pub fn probe_video_info(path: &str) -> Result<VideoInfo, MediaError> {
    if let Some(kind) = special_file(Path::new(path)) {
        return Err(MediaError::io(
            path,
            format!("is a {kind}, not a video file (or a URL)"),
        ));
    }
    let out = ffprobe_first_video(
        &[
            "-show_entries",
            "stream=width,height,nb_frames,duration,avg_frame_rate,r_frame_rate:stream_side_data=rotation:format=duration",
        ],
        "default=nw=1",
        path,
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    match StreamFacts::parse(&text) {
        Some(facts) if out.status.success() => {
            let (width, height) = facts.shown_size();
            Ok(VideoInfo {
                width,
                height,
                frames: facts.frames,
                duration_s: facts.duration_s,
                frame_rate: facts.frame_rate,
            })
        }
        _ => {
            let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
            // ffprobe reads the file and finds no video stream in it (audio only, or a
            // container with nothing in it): it says nothing, so say what it found.
            let why = if said.is_empty() && out.status.success() {
                "ffprobe found no video stream in it".to_string()
            } else {
                said
            };
            Err(MediaError::NotVideo(format!(
                "{}: not a readable video ({})",
                shown(path),
                why.replace(path, &shown(path))
            )))
        }
    }
}

/// Whether `path` names a network stream (`rtsp://cam/1`, `udp://@:1234`, `http://…`)
/// rather than a file (`file:` URLs are files).
pub fn is_url(path: &str) -> bool {
    protocol::functions::url_scheme(path).is_some()
}

/// How many packets (encoded frames) the first video stream of the file at `path`
/// holds, read to its end: a file whose writer was cut short counts what it holds. A
/// file with no readable video (empty, only a header) holds 0.
pub fn count_video_packets(path: &Path) -> Result<u64, MediaError> {
    let out = ffprobe_first_video(
        &["-count_packets", "-show_entries", "stream=nb_read_packets"],
        "csv=p=0",
        path,
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.trim().trim_end_matches(',').parse::<u64>().ok())
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_url_are_masked_where_it_is_shown() {
        assert_eq!(
            shown("rtsp://admin:s3cret@10.0.0.5:554/stream1"),
            "rtsp://admin:***@10.0.0.5:554/stream1"
        );
        assert_eq!(
            shown("https://TOKEN@h/live.m3u8"),
            "https://***@h/live.m3u8"
        );
        assert_eq!(
            shown("http://h/cam.mjpg?user=a&Password=b&res=hd&token=c"),
            "http://h/cam.mjpg?user=a&Password=***&res=hd&token=***"
        );
        assert_eq!(shown("rtsp://cam/1"), "rtsp://cam/1");
        assert_eq!(
            shown("/videos/a@b:c.mp4"),
            "/videos/a@b:c.mp4",
            "a file is shown as it is"
        );
        assert_eq!(
            shown("udp://@:1234"),
            "udp://***@:1234",
            "no secret, but nothing to lose"
        );
    }

    #[test]
    fn urls_are_told_from_files() {
        for url in [
            "rtsp://cam/1",
            "udp://@:1234",
            "http://h/v.ts",
            "srt+x://h",
            "HTTPS://h",
        ] {
            assert!(is_url(url), "{url}");
        }
        for file in [
            "v.mp4",
            "/a/b.mkv",
            "file:///a/b.mkv",
            "odd name://x.mp4",
            "://x",
        ] {
            assert!(!is_url(file), "{file}");
        }
    }

    #[test]
    fn live_streams_are_told_from_files_and_recordings() {
        let info = |text: &str| {
            let f = StreamFacts::parse(text).expect(text);
            VideoInfo {
                width: f.width,
                height: f.height,
                frames: f.frames,
                duration_s: f.duration_s,
                frame_rate: f.frame_rate,
            }
        };
        let recording = info("width=64\nheight=48\nduration=N/A\nduration=8.000000");
        let endless = info("width=64\nheight=48\nduration=N/A\nduration=N/A");
        assert_eq!(recording.duration_s, Some(8.0));
        assert_eq!(endless.duration_s, None);
        assert!(!recording.is_live("v.mp4") && !endless.is_live("/a/v.ts"));
        assert!(
            !recording.is_live("http://h/v.mp4"),
            "a recording served over HTTP"
        );
        assert!(
            endless.is_live("http://h/live.ts"),
            "an HTTP stream without an end"
        );
        assert!(
            recording.is_live("rtsp://cam/1"),
            "a live protocol, whatever it says"
        );
        assert!(endless.is_live("UDP://@:1234"));
    }

    #[test]
    fn the_frame_rate_is_the_average_else_the_base_rate() {
        let rate = |text: &str| StreamFacts::parse(text).expect(text).frame_rate;
        let ntsc = "width=64\nheight=48\nr_frame_rate=30000/1001\navg_frame_rate=30000/1001";
        assert!((rate(ntsc).expect("a rate") - 29.97).abs() < 0.01);
        let phone = "width=64\nheight=48\nr_frame_rate=60/1\navg_frame_rate=2997/100";
        assert_eq!(
            rate(phone),
            Some(29.97),
            "a variable-rate clip plays at its average"
        );
        assert_eq!(
            rate("width=64\nheight=48\nr_frame_rate=25/1\navg_frame_rate=0/0"),
            Some(25.0)
        );
        assert_eq!(
            rate("width=64\nheight=48\nr_frame_rate=0/0\navg_frame_rate=0/0"),
            None
        );
        assert_eq!(rate("width=64\nheight=48\navg_frame_rate=1/0"), None);
    }

    #[test]
    fn a_quarter_turned_video_is_probed_at_the_size_a_player_shows() {
        let facts = |text: &str| StreamFacts::parse(text).expect(text);
        let portrait = facts("width=320\nheight=240\nnb_frames=20\nrotation=90\n");
        assert_eq!(portrait.shown_size(), (240, 320));
        assert_eq!(portrait.frames, Some(20));
        // Newer ffprobes say -90 for the same clip; a half turn keeps the size.
        assert_eq!(
            facts("width=320\nheight=240\nrotation=-90").shown_size(),
            (240, 320)
        );
        assert_eq!(
            facts("width=320\nheight=240\nrotation=270").shown_size(),
            (240, 320)
        );
        assert_eq!(
            facts("width=320\nheight=240\nrotation=180").shown_size(),
            (320, 240)
        );
        let stored = facts("width=320\nheight=240\nnb_frames=N/A\n");
        assert_eq!((stored.shown_size(), stored.frames), ((320, 240), None));
        // No size, no video (ffprobe prints nothing for an audio-only file).
        assert_eq!(StreamFacts::parse(""), None);
        assert_eq!(StreamFacts::parse("width=0\nheight=240"), None);
        assert_eq!(StreamFacts::parse("width=x\nheight=240"), None);
    }
}
