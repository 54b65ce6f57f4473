//! `table.select` and `table.merge` on record batches.
//!
//! Merge works on the tables of one item (one source and seq), so `source` and `seq`
//! are equal across them: `concat` stacks the rows (a column missing in one table is
//! null there) and `join` is an inner join on the `on` columns.

use super::{column_index, TableError};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use std::collections::HashMap;
use std::sync::Arc;

/// The columns of `batch` named in `columns`, in that order.
pub fn select(batch: &RecordBatch, columns: &[String]) -> Result<RecordBatch, TableError> {
    let indices = columns
        .iter()
        .map(|c| column_index(batch, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(batch.project(&indices)?)
}

/// How `table.merge` combines tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeHow {
    /// Union of the rows; columns missing in a table are null there.
    Concat,
    /// Inner join on these key columns (`source` and `seq` are implied; listing them
    /// is allowed and changes nothing, since one item's tables share them).
    Join(Vec<String>),
}

/// Merge the tables of one item (in input order). One table comes back unchanged.
pub fn merge(tables: &[RecordBatch], how: &MergeHow) -> Result<RecordBatch, TableError> {
    let Some((first, rest)) = tables.split_first() else {
        return Err(TableError::Merge("no table to merge".into()));
    };
    match how {
        MergeHow::Concat => concat(tables),
        MergeHow::Join(on) => {
            let mut acc = first.clone();
            for (k, right) in rest.iter().enumerate() {
                acc = join(&acc, right, on, k + 2)?;
            }
            Ok(acc)
        }
    }
}

/// Stack the rows of several tables; the columns are the union, in order of first
/// appearance. A column that two tables type differently is an error.
pub fn concat(tables: &[RecordBatch]) -> Result<RecordBatch, TableError> {
    let mut fields: Vec<Field> = Vec::new();
    for t in tables {
        for f in t.schema_ref().fields() {
            match fields.iter_mut().find(|g| g.name() == f.name()) {
                Some(g) if g.data_type() != f.data_type() => {
                    return Err(TableError::Column {
                        column: f.name().clone(),
                        detail: format!(
                            "is {} in one table and {} in another; concat needs one type",
                            g.data_type(),
                            f.data_type()
                        ),
                    })
                }
                Some(g) => {
                    if f.is_nullable() {
                        *g = g.clone().with_nullable(true);
                    }
                }
                None => fields.push(f.as_ref().clone()),
            }
        }
    }
    for f in fields.iter_mut() {
        if tables
            .iter()
            .any(|t| t.schema_ref().index_of(f.name()).is_err())
        {
            *f = f.clone().with_nullable(true);
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let mut aligned = Vec::with_capacity(tables.len());
    for t in tables {
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match t.schema_ref().index_of(f.name()) {
                Ok(i) => t.column(i).clone(),
                Err(_) => new_null_array(f.data_type(), t.num_rows()),
            })
            .collect();
        aligned.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(arrow_select::concat::concat_batches(&schema, &aligned)?)
}

/// One cell of a join key, hashable (floats by their bits, -0 and +0 made equal).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyCell {
    Int(i128),
    Float(u64),
    Text(String),
    Bool(bool),
}

fn key_cells(batch: &RecordBatch, name: &str) -> Result<Vec<Option<KeyCell>>, TableError> {
    let a = batch.column(column_index(batch, name)?);
    fn ints<T: ArrowPrimitiveType>(a: &dyn Array) -> Vec<Option<KeyCell>>
    where
        T::Native: Into<i128>,
    {
        a.as_primitive::<T>()
            .iter()
            .map(|v| v.map(|v| KeyCell::Int(v.into())))
            .collect()
    }
    let float = |v: f64| KeyCell::Float(if v == 0.0 { 0 } else { v.to_bits() });
    Ok(match a.data_type() {
        DataType::Int8 => ints::<Int8Type>(a),
        DataType::Int16 => ints::<Int16Type>(a),
        DataType::Int32 => ints::<Int32Type>(a),
        DataType::Int64 => ints::<Int64Type>(a),
        DataType::UInt8 => ints::<UInt8Type>(a),
        DataType::UInt16 => ints::<UInt16Type>(a),
        DataType::UInt32 => ints::<UInt32Type>(a),
        DataType::UInt64 => ints::<UInt64Type>(a),
        DataType::Float32 => a
            .as_primitive::<Float32Type>()
            .iter()
            .map(|v| v.map(|v| float(f64::from(v))))
            .collect(),
        DataType::Float64 => a
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map(float))
            .collect(),
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|s| KeyCell::Text(s.to_string())))
            .collect(),
        DataType::Boolean => a
            .as_boolean()
            .iter()
            .map(|v| v.map(KeyCell::Bool))
            .collect(),
        other => {
            return Err(TableError::Column {
                column: name.to_string(),
                detail: format!("is {other}, which cannot be a join key"),
            })
        }
    })
}

/// Row keys of a table; `None` where a key cell is null (null matches nothing).
fn row_keys(batch: &RecordBatch, on: &[String]) -> Result<Vec<Option<Vec<KeyCell>>>, TableError> {
    let columns = on
        .iter()
        .map(|c| key_cells(batch, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| columns.iter().map(|c| c[row].clone()).collect())
        .collect())
}

/// Inner join of two tables of one item on `on` (besides source and seq). The result
/// has every column of `left`, then the columns of `right` that are not keys; a right
/// column whose name `left` already has is renamed `<name>_<input>` (`input` being
/// the right table's 1-based position in the merge).
pub fn join(
    left: &RecordBatch,
    right: &RecordBatch,
    on: &[String],
    input: usize,
) -> Result<RecordBatch, TableError> {
    let keys: Vec<String> = on
        .iter()
        .filter(|c| c.as_str() != "source" && c.as_str() != "seq")
        .cloned()
        .collect();
    let left_keys = row_keys(left, &keys)?;
    let right_keys = row_keys(right, &keys)?;
    for k in &keys {
        let (l, r) = (
            left.column(column_index(left, k)?).data_type(),
            right.column(column_index(right, k)?).data_type(),
        );
        if l != r {
            return Err(TableError::Column {
                column: k.clone(),
                detail: format!("join key is {l} on one side and {r} on the other"),
            });
        }
    }
    let mut by_key: HashMap<&[KeyCell], Vec<u32>> = HashMap::new();
    for (row, key) in right_keys.iter().enumerate() {
        if let Some(key) = key {
            by_key.entry(key.as_slice()).or_default().push(row as u32);
        }
    }
    let (mut li, mut ri) = (Vec::new(), Vec::new());
    for (row, key) in left_keys.iter().enumerate() {
        let Some(matches) = key.as_ref().and_then(|k| by_key.get(k.as_slice())) else {
            continue;
        };
        for &r in matches {
            li.push(row as u32);
            ri.push(r);
        }
    }
    let (li, ri) = (UInt32Array::from(li), UInt32Array::from(ri));
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in left.schema_ref().fields().iter().zip(left.columns()) {
        fields.push(f.as_ref().clone());
        columns.push(arrow_select::take::take(c.as_ref(), &li, None)?);
    }
    let implied = |n: &str| n == "source" || n == "seq" || keys.iter().any(|k| k == n);
    for (f, c) in right.schema_ref().fields().iter().zip(right.columns()) {
        if implied(f.name()) && left.schema_ref().index_of(f.name()).is_ok() {
            continue;
        }
        let mut name = f.name().clone();
        if fields.iter().any(|g| g.name() == &name) {
            name = format!("{name}_{input}");
        }
        fields.push(f.as_ref().clone().with_name(name));
        columns.push(arrow_select::take::take(c.as_ref(), &ri, None)?);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::detections::tests::{face, line};
    use crate::table::{detections_batch, rows_of, Extras};
    use arrow_array::{Float32Array, StringArray, UInt64Array};

    fn faces() -> RecordBatch {
        let mut b = face(7, 0.6);
        b.class = "person".into();
        detections_batch(&[face(7, 0.9), b], Extras::MTCNN).unwrap()
    }

    #[test]
    fn select_keeps_the_given_order_and_names_unknowns() {
        let out = select(&faces(), &["score".into(), "class".into()]).unwrap();
        assert_eq!(crate::table::column_list(&out), "score, class");
        assert_eq!(out.num_rows(), 2);
        let e = select(&faces(), &["scores".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'scores'") && e.contains("x1, y1, x2, y2, landmarks"),
            "{e}"
        );
    }

    #[test]
    fn concat_unions_rows_and_fills_missing_columns_with_nulls() {
        let text = detections_batch(&[line(7, "STOP")], Extras::OCR).unwrap();
        let out = merge(&[faces(), text], &MergeHow::Concat).unwrap();
        assert_eq!(out.num_rows(), 3);
        assert_eq!(
            crate::table::column_list(&out),
            "source, seq, class, score, x1, y1, x2, y2, landmarks, text, text_score, polygon"
        );
        let rows = rows_of(&out).unwrap();
        assert!(rows[0].landmarks.is_some() && rows[0].text.is_none());
        assert_eq!(rows[2].text.as_deref(), Some("STOP"));
        assert!(rows[2].landmarks.is_none());
        let empty = detections_batch(&[], Extras::NONE).unwrap();
        assert_eq!(
            merge(&[empty.clone(), empty], &MergeHow::Concat)
                .unwrap()
                .num_rows(),
            0
        );
    }

    #[test]
    fn concat_refuses_two_types_for_one_column() {
        let s = Arc::new(Schema::new(vec![Field::new(
            "score",
            DataType::Utf8,
            false,
        )]));
        let odd = RecordBatch::try_new(s, vec![Arc::new(StringArray::from(vec!["high"]))]).unwrap();
        let e = merge(&[faces(), odd], &MergeHow::Concat)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'score'") && e.contains("Float32") && e.contains("Utf8"),
            "{e}"
        );
    }

    #[test]
    fn join_matches_on_keys_and_renames_clashes() {
        let s = Arc::new(Schema::new(vec![
            Field::new("seq", DataType::UInt64, false),
            Field::new("class", DataType::Utf8, false),
            Field::new("score", DataType::Float32, false),
            Field::new("colour", DataType::Utf8, true),
        ]));
        let attrs = RecordBatch::try_new(
            s,
            vec![
                Arc::new(UInt64Array::from(vec![7, 7, 7])),
                Arc::new(StringArray::from(vec!["face", "face", "dog"])),
                Arc::new(Float32Array::from(vec![0.1, 0.2, 0.3])),
                Arc::new(StringArray::from(vec![Some("red"), None, Some("blue")])),
            ],
        )
        .unwrap();
        let how = MergeHow::Join(vec!["source".into(), "seq".into(), "class".into()]);
        let out = merge(&[faces(), attrs], &how).unwrap();
        assert_eq!(
            crate::table::column_list(&out),
            "source, seq, class, score, x1, y1, x2, y2, landmarks, score_2, colour"
        );
        assert_eq!(
            out.num_rows(),
            2,
            "one face × two face attribute rows; person matches none"
        );
        let extra = out.column(9).as_primitive::<Float32Type>();
        assert_eq!(extra.values(), &[0.1, 0.2]);
        // No keys besides source and seq: every pair of rows.
        let cross = merge(&[faces(), faces()], &MergeHow::Join(vec![])).unwrap();
        assert_eq!(cross.num_rows(), 4);
        let e = merge(&[faces(), faces()], &MergeHow::Join(vec!["colour".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'colour'"), "{e}");
    }

    #[test]
    fn join_keys_must_agree_in_type() {
        let s = Arc::new(Schema::new(vec![Field::new(
            "class",
            DataType::UInt64,
            false,
        )]));
        let odd = RecordBatch::try_new(s, vec![Arc::new(UInt64Array::from(vec![1]))]).unwrap();
        let e = merge(&[faces(), odd], &MergeHow::Join(vec!["class".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'class'") && e.contains("UInt64"), "{e}");
    }
}
