//! Showing text that came from outside (app files, requests, paths) in messages
//! without letting it steer the terminal: control characters are escaped (`\u{1b}`)
//! and long values are cut, saying how long they were.

/// Longest value shown whole in a message (in characters).
pub const SHOWN_CHARS: usize = 64;

/// `s` with every control character escaped (newlines and tabs too), cut to
/// [`SHOWN_CHARS`] characters with its full length in bytes after the cut.
pub fn shown(s: &str) -> String {
    shown_up_to(s, SHOWN_CHARS)
}

/// [`shown`] with another cut: at most `max` characters of `s`.
pub fn shown_up_to(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push_str(&format!("… ({} bytes in all)", s.len()));
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// `s` with its control characters escaped except newlines and tabs: for messages
/// made of several lines that embed outside text.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\n' || c == '\t' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(shown("ok-name"), "ok-name");
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("x\ny"), "x\\ny");
        let long = "n".repeat(5_000_000);
        let s = shown(&long);
        assert!(
            s.len() < 200 && s.ends_with("(5000000 bytes in all)"),
            "{s}"
        );
        assert_eq!(
            escape_controls("a\u{7}\nb\tc\u{9b}"),
            "a\\u{7}\nb\tc\\u{9b}"
        );
    }
}
