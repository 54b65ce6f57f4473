//! Drawing detections on packed RGB8 frames: 2-pixel box outlines, text polygons,
//! landmarks as small filled squares, and a label tag (class and score, or the
//! recognised text) in a built-in 5×7 ASCII font above each box. Everything is
//! clipped to the frame; coordinates that are not finite are skipped.

use super::DetectionRow;

/// Outline thickness in pixels.
pub const LINE: i64 = 2;
/// Side of a landmark square in pixels.
pub const MARK: i64 = 4;
/// Longest label drawn (characters).
pub const LABEL_MAX: usize = 32;

const PALETTE: [[u8; 3]; 8] = [
    [255, 56, 56],
    [56, 200, 56],
    [40, 120, 255],
    [255, 178, 29],
    [207, 56, 255],
    [0, 212, 212],
    [255, 112, 180],
    [160, 255, 80],
];

/// The colour of a class: stable across frames and runs.
pub fn class_colour(class: &str) -> [u8; 3] {
    let hash = class.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// A frame to draw on; rows past the end of the buffer are ignored.
struct Canvas<'a> {
    rgb: &'a mut [u8],
    width: i64,
    height: i64,
}

impl Canvas<'_> {
    /// Fill `[x0, x1) × [y0, y1)`, clipped.
    fn fill(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        let (x0, x1) = (x0.max(0), x1.min(self.width));
        let (y0, y1) = (y0.max(0), y1.min(self.height));
        for y in y0..y1 {
            for x in x0..x1 {
                let i = ((y * self.width + x) * 3) as usize;
                self.rgb[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    fn outline(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        self.fill(x0, y0, x1, y0 + LINE, c);
        self.fill(x0, y1 - LINE, x1, y1, c);
        self.fill(x0, y0, x0 + LINE, y1, c);
        self.fill(x1 - LINE, y0, x1, y1, c);
    }

    fn line(&mut self, (ax, ay): (f32, f32), (bx, by): (f32, f32), c: [u8; 3]) {
        let (dx, dy) = (bx - ax, by - ay);
        let cap = (4 * (self.width + self.height)).max(1) as f32;
        let steps = dx.abs().max(dy.abs()).ceil().clamp(1.0, cap) as i64;
        for k in 0..=steps {
            let t = k as f32 / steps as f32;
            let (x, y) = (pix(ax + dx * t), pix(ay + dy * t));
            self.fill(
                x - LINE / 2,
                y - LINE / 2,
                x + LINE - LINE / 2,
                y + LINE - LINE / 2,
                c,
            );
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (x + k as i64 * 6 + col, y + r as i64);
                        self.fill(px, py, px + 1, py + 1, c);
                    }
                }
            }
        }
    }
}

/// A coordinate as a pixel index, kept far from overflow.
fn pix(v: f32) -> i64 {
    v.round().clamp(-1e9, 1e9) as i64
}

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

/// The label of a detection: its text if it has one, else class and score; a
/// tracked detection starts with its track id (`#7 face 0.98`).
pub fn label(row: &DetectionRow) -> String {
    let s = match &row.text {
        Some(t) if !t.is_empty() => t.clone(),
        _ => format!("{} {:.2}", row.class, row.score),
    };
    let s = match row.track_id {
        Some(id) => format!("#{id} {s}"),
        None => s,
    };
    s.chars().take(LABEL_MAX).collect()
}

/// Draw every detection on a packed RGB8 frame of `width` × `height`.
pub fn draw_detections(rgb: &mut [u8], width: u32, height: u32, rows: &[DetectionRow]) {
    let width = i64::from(width);
    let height = if width == 0 {
        0
    } else {
        i64::from(height).min((rgb.len() / (3 * width as usize)) as i64)
    };
    let mut canvas = Canvas { rgb, width, height };
    for row in rows {
        let colour = class_colour(&row.class);
        if let Some(p) = row.polygon.filter(|p| finite(p)) {
            for k in 0..4 {
                let (a, b) = (k * 2, (k * 2 + 2) % 8);
                canvas.line((p[a], p[a + 1]), (p[b], p[b + 1]), colour);
            }
        }
        if !finite(&[row.x1, row.y1, row.x2, row.y2]) {
            continue;
        }
        let (x0, x1) = (row.x1.min(row.x2), row.x1.max(row.x2));
        let (y0, y1) = (row.y1.min(row.y2), row.y1.max(row.y2));
        let (x0, y0) = (pix(x0), pix(y0));
        let (x1, y1) = (pix(x1).max(x0 + 1), pix(y1).max(y0 + 1));
        canvas.outline(x0, y0, x1, y1, colour);
        if let Some(marks) = row.landmarks.filter(|m| finite(m)) {
            let inverse = colour.map(|v| 255 - v);
            for pair in marks.chunks_exact(2) {
                let (x, y) = (pix(pair[0]), pix(pair[1]));
                canvas.fill(
                    x - MARK / 2,
                    y - MARK / 2,
                    x + MARK / 2,
                    y + MARK / 2,
                    inverse,
                );
            }
        }
        let text = label(row);
        let tag_w = text.chars().count() as i64 * 6 + 3;
        let tag_h = 7 + 4;
        let top = if y0 - tag_h >= 0 { y0 - tag_h } else { y0 };
        canvas.fill(x0, top, x0 + tag_w, top + tag_h, colour);
        let luma =
            299 * u32::from(colour[0]) + 587 * u32::from(colour[1]) + 114 * u32::from(colour[2]);
        let ink = if luma > 140_000 {
            [0, 0, 0]
        } else {
            [255, 255, 255]
        };
        canvas.text(x0 + 2, top + 2, &text, ink);
    }
}

/// A segment from one point to another, in a colour.
pub type Segment = ((f32, f32), (f32, f32), [u8; 3]);

/// Draw 2-pixel segments `(a, b)` and `MARK`-sized points on a packed RGB8 frame (the
/// skeletons of [`super::skeleton`]); non-finite coordinates are skipped, all clipped.
pub fn draw_segments(
    rgb: &mut [u8],
    width: u32,
    height: u32,
    segments: &[Segment],
    points: &[((f32, f32), [u8; 3])],
) {
    let width = i64::from(width);
    let height = if width == 0 {
        0
    } else {
        i64::from(height).min((rgb.len() / (3 * width as usize)) as i64)
    };
    let mut canvas = Canvas { rgb, width, height };
    for &(a, b, c) in segments {
        if finite(&[a.0, a.1, b.0, b.1]) {
            canvas.line(a, b, c);
        }
    }
    for &((x, y), c) in points {
        if finite(&[x, y]) {
            let (x, y) = (pix(x), pix(y));
            canvas.fill(x - MARK / 2, y - MARK / 2, x + MARK / 2, y + MARK / 2, c);
        }
    }
}

/// The 5×7 bitmap of an ASCII character (bit 4 is the left column); lower case is
/// drawn as upper case and anything else as '?'.
fn glyph(c: char) -> [u8; 7] {
    let c = c.to_ascii_uppercase();
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '!' => [0x04, 0x04, 0x04, 0x04, 0x04, 0, 0x04],
        '\'' => [0x04, 0x04, 0x08, 0, 0, 0, 0],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::detections::tests::{face, line};

    const W: u32 = 100;
    const H: u32 = 90;

    fn px(rgb: &[u8], x: u32, y: u32) -> [u8; 3] {
        let i = ((y * W + x) * 3) as usize;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    #[test]
    fn box_edges_change_and_the_rest_stays() {
        let mut rgb = vec![7u8; (W * H * 3) as usize];
        let mut row = face(0, 0.9);
        row.landmarks = None;
        draw_detections(&mut rgb, W, H, &[row]);
        let c = class_colour("face");
        // Box 10..50 × 20..70: both pixels of each 2-px edge.
        for (x, y) in [
            (10, 40),
            (11, 40),
            (49, 40),
            (48, 40),
            (30, 20),
            (30, 21),
            (30, 69),
            (30, 68),
        ] {
            assert_eq!(px(&rgb, x, y), c, "edge pixel {x},{y}");
        }
        // Inside, just outside, and far away stay as they were.
        for (x, y) in [
            (12, 40),
            (30, 45),
            (47, 66),
            (9, 40),
            (50, 40),
            (30, 70),
            (90, 85),
            (5, 5),
        ] {
            assert_eq!(px(&rgb, x, y), [7, 7, 7], "pixel {x},{y}");
        }
        // The tag sits above the box.
        assert_ne!(px(&rgb, 11, 12), [7, 7, 7]);
    }

    #[test]
    fn landmarks_polygons_and_labels() {
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        let mut f = face(0, 0.9);
        f.landmarks = Some([30., 40., 40., 40., 35., 50., 31., 60., 39., 60.]);
        draw_detections(&mut rgb, W, H, &[f]);
        assert_eq!(px(&rgb, 35, 50), class_colour("face").map(|v| 255 - v));
        let mut rgb = vec![0u8; (W * H * 3) as usize];
        let mut l = line(0, "Hi");
        l.polygon = Some([60., 60., 90., 62., 90., 80., 60., 80.]);
        draw_detections(&mut rgb, W, H, &[l.clone()]);
        assert_eq!(px(&rgb, 75, 80), class_colour("text"));
        assert_eq!(px(&rgb, 75, 70), [0, 0, 0]);
        assert_eq!(label(&l), "Hi");
        assert_eq!(label(&face(0, 0.875)), "face 0.88");
        let tracked = DetectionRow {
            track_id: Some(7),
            ..face(0, 0.875)
        };
        assert_eq!(label(&tracked), "#7 face 0.88");
    }

    #[test]
    fn boxes_are_clipped_and_bad_input_does_not_panic() {
        let mut rgb = vec![9u8; (W * H * 3) as usize];
        let mut big = face(0, 0.5);
        (big.x1, big.y1, big.x2, big.y2) = (-50.0, -50.0, 1e9, 1e9);
        big.polygon = Some([-1e30, 0., 1e30, 5., f32::MAX, 1e20, 0., 1e20]);
        let mut nan = face(0, 0.5);
        nan.x1 = f32::NAN;
        nan.landmarks = Some([f32::INFINITY; 10]);
        draw_detections(&mut rgb, W, H, &[big, nan]);
        assert_eq!(px(&rgb, 50, 45), [9, 9, 9]);
        // A buffer shorter than width × height × 3 is drawn as far as it goes.
        let mut short = vec![0u8; 10 * 3 * 5 + 2];
        draw_detections(&mut short, 10, 20, &[face(0, 0.5)]);
        draw_detections(&mut [], 0, 0, &[face(0, 0.5)]);
    }
}
