//! Table cells as JSON values, for the text writers of `table.print`.

use super::TableError;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde_json::{Number, Value};

/// A float as JSON, with the digits its own type prints (0.9f32 is 0.9, not
/// 0.8999999761581421); NaN and infinities become null.
fn float(text: String) -> Value {
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

/// The value of one cell; lists become JSON arrays.
pub fn cell(array: &dyn Array, row: usize) -> Result<Value, TableError> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let list = |a: &dyn Array| -> Result<Value, TableError> {
        (0..a.len())
            .map(|k| cell(a, k))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    };
    Ok(match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(array.as_primitive::<Float32Type>().value(row).to_string()),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row).to_string()),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::FixedSizeList(..) => list(array.as_fixed_size_list().value(row).as_ref())?,
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref())?,
        other => {
            return Err(TableError::Column {
                column: String::new(),
                detail: format!("cells of type {other} cannot be printed"),
            })
        }
    })
}

/// Every row of a batch as JSON values, in column order.
pub fn rows(batch: &RecordBatch) -> Result<Vec<Vec<Value>>, TableError> {
    let names = batch.schema();
    (0..batch.num_rows())
        .map(|row| {
            batch
                .columns()
                .iter()
                .zip(names.fields())
                .map(|(c, f)| {
                    cell(c.as_ref(), row).map_err(|e| match e {
                        TableError::Column { detail, .. } => TableError::Column {
                            column: f.name().clone(),
                            detail,
                        },
                        other => other,
                    })
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::detections::tests::{face, line};
    use crate::table::{detections_batch, Extras};
    use serde_json::json;

    #[test]
    fn detection_rows_as_json() {
        let rows = [face(4, 0.9), line(4, "a,b")];
        let batch = detections_batch(&rows, Extras::of_rows(&rows)).unwrap();
        let values = rows_of_json(&batch);
        assert_eq!(
            values[0],
            json!([
                "cam",
                4,
                "face",
                0.9,
                10.0,
                20.0,
                50.0,
                70.0,
                [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
                null,
                null,
                null
            ])
        );
        assert_eq!(values[1][9], json!("a,b"));
        assert_eq!(values[1][10], json!(0.75));
        assert_eq!(
            values[1][11],
            json!([0.0, 0.0, 9.0, 0.0, 9.0, 5.0, 0.0, 5.0])
        );
    }

    fn rows_of_json(batch: &RecordBatch) -> Vec<Value> {
        rows(batch).unwrap().into_iter().map(Value::Array).collect()
    }
}
