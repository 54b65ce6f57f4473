//! The detection table of the design: `source`, `seq`, `class`, `score`, `x1`, `y1`,
//! `x2`, `y2` (pixels of the original frame), and the optional `landmarks` (MTCNN:
//! five x, y pairs), `text`, `text_score` and `polygon` (four x, y corners,
//! clockwise from top-left). Also the Arrow IPC form that travels in
//! `Payload::Table`.

use super::{column_index, TableError};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch, StringArray, UInt64Array};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// Numbers in a `landmarks` cell.
pub const LANDMARKS_LEN: usize = 10;
/// Numbers in a `polygon` cell.
pub const POLYGON_LEN: usize = 8;

/// One detection, as post-processing produces it and drawing consumes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRow {
    pub source: String,
    pub seq: u64,
    pub class: String,
    pub score: f32,
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// MTCNN: eyes, nose, mouth corners as x, y pairs.
    pub landmarks: Option<[f32; LANDMARKS_LEN]>,
    pub text: Option<String>,
    pub text_score: Option<f32>,
    /// Text box corners as x, y pairs, clockwise from top-left.
    pub polygon: Option<[f32; POLYGON_LEN]>,
    /// The DeepSORT track (`track.deepsort` adds the column; null while tentative).
    pub track_id: Option<u64>,
}

/// Which optional columns a detection table has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras {
    pub landmarks: bool,
    /// `text` and `text_score`.
    pub text: bool,
    pub polygon: bool,
}

impl Extras {
    /// Boxes only (YOLO-style detectors).
    pub const NONE: Extras = Extras {
        landmarks: false,
        text: false,
        polygon: false,
    };
    /// Faces with landmarks.
    pub const MTCNN: Extras = Extras {
        landmarks: true,
        text: false,
        polygon: false,
    };
    /// Text lines: recognised text, its score and the polygon.
    pub const OCR: Extras = Extras {
        landmarks: false,
        text: true,
        polygon: true,
    };

    /// The columns that some row fills.
    pub fn of_rows(rows: &[DetectionRow]) -> Extras {
        Extras {
            landmarks: rows.iter().any(|r| r.landmarks.is_some()),
            text: rows
                .iter()
                .any(|r| r.text.is_some() || r.text_score.is_some()),
            polygon: rows.iter().any(|r| r.polygon.is_some()),
        }
    }
}

fn list_type(len: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        len as i32,
    )
}

/// The schema of a detection table with the given optional columns.
pub fn detections_schema(with: Extras) -> SchemaRef {
    let mut fields = vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("class", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("x1", DataType::Float32, false),
        Field::new("y1", DataType::Float32, false),
        Field::new("x2", DataType::Float32, false),
        Field::new("y2", DataType::Float32, false),
    ];
    if with.landmarks {
        fields.push(Field::new("landmarks", list_type(LANDMARKS_LEN), true));
    }
    if with.text {
        fields.push(Field::new("text", DataType::Utf8, true));
        fields.push(Field::new("text_score", DataType::Float32, true));
    }
    if with.polygon {
        fields.push(Field::new("polygon", list_type(POLYGON_LEN), true));
    }
    Arc::new(Schema::new(fields))
}

fn f32_column(rows: &[DetectionRow], get: impl Fn(&DetectionRow) -> f32) -> ArrayRef {
    Arc::new(Float32Array::from_iter_values(rows.iter().map(get)))
}

fn list_column<const N: usize>(
    rows: &[DetectionRow],
    get: impl Fn(&DetectionRow) -> Option<[f32; N]>,
) -> ArrayRef {
    let values = Float32Builder::with_capacity(rows.len() * N);
    let mut b = FixedSizeListBuilder::with_capacity(values, N as i32, rows.len())
        .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    for r in rows {
        match get(r) {
            Some(v) => {
                b.values().append_slice(&v);
                b.append(true);
            }
            None => {
                b.values().append_slice(&[0.0; N]);
                b.append(false);
            }
        }
    }
    Arc::new(b.finish())
}

/// A detection table of `rows` (zero rows is a valid, empty table). Columns of
/// `with` that a row leaves empty are null there; extras not in `with` are left out.
pub fn detections_batch(rows: &[DetectionRow], with: Extras) -> Result<RecordBatch, TableError> {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seq))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.class.as_str()),
        )),
        f32_column(rows, |r| r.score),
        f32_column(rows, |r| r.x1),
        f32_column(rows, |r| r.y1),
        f32_column(rows, |r| r.x2),
        f32_column(rows, |r| r.y2),
    ];
    if with.landmarks {
        columns.push(list_column(rows, |r| r.landmarks));
    }
    if with.text {
        let mut text = StringBuilder::new();
        for r in rows {
            text.append_option(r.text.as_deref());
        }
        columns.push(Arc::new(text.finish()));
        columns.push(Arc::new(Float32Array::from_iter(
            rows.iter().map(|r| r.text_score),
        )));
    }
    if with.polygon {
        columns.push(list_column(rows, |r| r.polygon));
    }
    Ok(RecordBatch::try_new(detections_schema(with), columns)?)
}

/// A record batch as an Arrow IPC stream (what `Payload::Table` carries).
pub fn encode_ipc(batch: &RecordBatch) -> Result<Vec<u8>, TableError> {
    let mut writer = StreamWriter::try_new(Vec::new(), batch.schema_ref())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// The record batch of an Arrow IPC stream. A stream of several batches is
/// concatenated; a stream with a schema but no batch is an empty table.
pub fn decode_ipc(bytes: &[u8]) -> Result<RecordBatch, TableError> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let mut batches = reader.collect::<Result<Vec<_>, _>>()?;
    if batches.len() > 1 {
        return Ok(arrow_select::concat::concat_batches(&schema, &batches)?);
    }
    Ok(batches
        .pop()
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

fn typed<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    want: &str,
    cast: impl Fn(&'a dyn Array) -> Option<&'a T>,
) -> Result<Option<&'a T>, TableError> {
    let Ok(i) = batch.schema_ref().index_of(name) else {
        return Ok(None);
    };
    cast(batch.column(i).as_ref())
        .map(Some)
        .ok_or_else(|| TableError::Column {
            column: name.to_string(),
            detail: format!("is {}, expected {want}", batch.column(i).data_type()),
        })
}

fn fixed<const N: usize>(
    batch: &RecordBatch,
    name: &str,
    row: usize,
) -> Result<Option<[f32; N]>, TableError> {
    let Ok(i) = batch.schema_ref().index_of(name) else {
        return Ok(None);
    };
    let bad = || TableError::Column {
        column: name.to_string(),
        detail: format!(
            "is {}, expected a list of {N} float32",
            batch.column(i).data_type()
        ),
    };
    let list = batch.column(i).as_fixed_size_list_opt().ok_or_else(bad)?;
    if list.value_length() as usize != N {
        return Err(bad());
    }
    if list.is_null(row) {
        return Ok(None);
    }
    let cell = list.value(row);
    let values = cell.as_primitive_opt::<Float32Type>().ok_or_else(bad)?;
    let mut out = [0.0; N];
    for (k, o) in out.iter_mut().enumerate() {
        *o = values.value(k);
    }
    Ok(Some(out))
}

/// The rows of a detection table (to draw them, for instance). The box columns
/// `x1`, `y1`, `x2`, `y2` are required; `source`, `seq`, `class` and `score` default
/// to "", 0, "" and 0 when a `table.select` left them out, and the extras to none.
pub fn rows_of(batch: &RecordBatch) -> Result<Vec<DetectionRow>, TableError> {
    let f32s = |name: &str| {
        typed(batch, name, "float32", |a| {
            a.as_primitive_opt::<Float32Type>()
        })
    };
    let strs = |name: &str| typed(batch, name, "utf8", |a| a.as_string_opt::<i32>());
    let need = |name: &str| -> Result<&Float32Array, TableError> {
        column_index(batch, name)?;
        f32s(name)?.ok_or_else(|| TableError::Column {
            column: name.into(),
            detail: "missing".into(),
        })
    };
    let (x1, y1, x2, y2) = (need("x1")?, need("y1")?, need("x2")?, need("y2")?);
    let source = strs("source")?;
    let seq = typed(batch, "seq", "uint64", |a| {
        a.as_primitive_opt::<UInt64Type>()
    })?;
    let class = strs("class")?;
    let track_id = typed(batch, "track_id", "uint64", |a| {
        a.as_primitive_opt::<UInt64Type>()
    })?;
    let score = f32s("score")?;
    let text = strs("text")?;
    let text_score = f32s("text_score")?;
    let value_f32 = |a: Option<&Float32Array>, row: usize| {
        a.and_then(|a| (!a.is_null(row)).then(|| a.value(row)))
    };
    let value_str = |a: Option<&StringArray>, row: usize| {
        a.and_then(|a| (!a.is_null(row)).then(|| a.value(row).to_string()))
    };
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (name, col) in [("x1", x1), ("y1", y1), ("x2", x2), ("y2", y2)] {
            if col.is_null(row) {
                return Err(TableError::Column {
                    column: name.into(),
                    detail: format!("row {row} is null"),
                });
            }
        }
        rows.push(DetectionRow {
            source: value_str(source, row).unwrap_or_default(),
            seq: seq
                .and_then(|a| (!a.is_null(row)).then(|| a.value(row)))
                .unwrap_or(0),
            class: value_str(class, row).unwrap_or_default(),
            score: value_f32(score, row).unwrap_or(0.0),
            x1: x1.value(row),
            y1: y1.value(row),
            x2: x2.value(row),
            y2: y2.value(row),
            landmarks: fixed::<LANDMARKS_LEN>(batch, "landmarks", row)?,
            text: value_str(text, row),
            text_score: value_f32(text_score, row),
            polygon: fixed::<POLYGON_LEN>(batch, "polygon", row)?,
            track_id: track_id.and_then(|a| (!a.is_null(row)).then(|| a.value(row))),
        });
    }
    Ok(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn face(seq: u64, score: f32) -> DetectionRow {
        DetectionRow {
            source: "cam".into(),
            seq,
            class: "face".into(),
            score,
            x1: 10.0,
            y1: 20.0,
            x2: 50.0,
            y2: 70.0,
            landmarks: Some([1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]),
            text: None,
            text_score: None,
            polygon: None,
            track_id: None,
        }
    }

    pub(crate) fn line(seq: u64, text: &str) -> DetectionRow {
        DetectionRow {
            class: "text".into(),
            landmarks: None,
            text: Some(text.into()),
            text_score: Some(0.75),
            polygon: Some([0., 0., 9., 0., 9., 5., 0., 5.]),
            ..face(seq, 0.5)
        }
    }

    #[test]
    fn rows_round_trip_through_ipc() {
        let rows = vec![face(3, 0.9), line(3, "héllo, \"world\"")];
        let with = Extras::of_rows(&rows);
        assert_eq!(
            with,
            Extras {
                landmarks: true,
                text: true,
                polygon: true
            }
        );
        let batch = detections_batch(&rows, with).unwrap();
        let back = decode_ipc(&encode_ipc(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
        assert_eq!(rows_of(&back).unwrap(), rows);
    }

    #[test]
    fn empty_table_keeps_its_schema() {
        let batch = detections_batch(&[], Extras::MTCNN).unwrap();
        let back = decode_ipc(&encode_ipc(&batch).unwrap()).unwrap();
        assert_eq!(back.num_rows(), 0);
        assert_eq!(back.schema(), detections_schema(Extras::MTCNN));
        assert!(rows_of(&back).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_ipc(b"not arrow at all").is_err());
        assert!(decode_ipc(&[]).is_err());
        let good = encode_ipc(&detections_batch(&[face(1, 0.5)], Extras::NONE).unwrap()).unwrap();
        assert!(decode_ipc(&good[..good.len() / 2]).is_err());
    }

    #[test]
    fn rows_of_names_the_missing_box_column() {
        let batch = detections_batch(&[face(1, 0.5)], Extras::NONE).unwrap();
        let only = super::super::select(&batch, &["x1".into(), "y1".into(), "x2".into()]).unwrap();
        let err = rows_of(&only).unwrap_err().to_string();
        assert!(err.contains("'y2'") && err.contains("x1, y1, x2"), "{err}");
    }
}
