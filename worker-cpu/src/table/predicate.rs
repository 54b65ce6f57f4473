//! Evaluation of `table.filter {where}` predicates on Arrow tables. The language and its
//! parser live in `protocol::predicate` (so `validate` checks a `where` without Arrow);
//! here a parsed predicate is evaluated row by row. A comparison with a null cell is
//! unknown, and unknown rows are dropped (SQL's three-valued logic).

use super::{column_index, TableError};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::DataType;
pub use protocol::predicate::{CmpOp, Operand, Predicate, PredicateError};

/// Evaluation of a parsed predicate on a table.
pub trait Evaluate {
    /// Evaluate on every row: true, false or null (unknown).
    fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, TableError>;
}

impl Evaluate for Predicate {
    fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, TableError> {
        Ok(eval(self, batch)?.into_iter().collect())
    }
}

fn eval(pred: &Predicate, batch: &RecordBatch) -> Result<Vec<Option<bool>>, TableError> {
    Ok(match pred {
        Predicate::Or(a, b) => zip(eval(a, batch)?, eval(b, batch)?, |x, y| match (x, y) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        }),
        Predicate::And(a, b) => zip(eval(a, batch)?, eval(b, batch)?, |x, y| match (x, y) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        }),
        Predicate::Not(a) => eval(a, batch)?.into_iter().map(|v| v.map(|b| !b)).collect(),
        Predicate::Value(op) => match values(batch, op)? {
            Values::Bool(v) => v,
            other => {
                return Err(TableError::Column {
                    column: operand_name(op),
                    detail: format!(
                        "is {}, not true/false: compare it (e.g. `{} > 0`)",
                        other.kind(),
                        operand_name(op)
                    ),
                })
            }
        },
        Predicate::Cmp(a, op, b) => compare(batch, a, *op, b)?,
    })
}

fn zip(
    a: Vec<Option<bool>>,
    b: Vec<Option<bool>>,
    f: impl Fn(Option<bool>, Option<bool>) -> Option<bool>,
) -> Vec<Option<bool>> {
    a.into_iter().zip(b).map(|(x, y)| f(x, y)).collect()
}

fn operand_name(op: &Operand) -> String {
    match op {
        Operand::Column(c) => c.clone(),
        Operand::Number(n) => n.to_string(),
        Operand::Text(s) => format!("'{s}'"),
        Operand::Bool(b) => b.to_string(),
    }
}

/// An operand's value on every row.
enum Values {
    Num(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
}

impl Values {
    fn kind(&self) -> &'static str {
        match self {
            Values::Num(_) => "a number",
            Values::Text(_) => "text",
            Values::Bool(_) => "a boolean",
        }
    }
}

fn nums<T: ArrowPrimitiveType>(a: &dyn Array, f: impl Fn(T::Native) -> f64) -> Vec<Option<f64>> {
    a.as_primitive::<T>().iter().map(|v| v.map(&f)).collect()
}

fn values(batch: &RecordBatch, op: &Operand) -> Result<Values, TableError> {
    let n = batch.num_rows();
    let name = match op {
        Operand::Number(x) => return Ok(Values::Num(vec![Some(*x); n])),
        Operand::Text(s) => return Ok(Values::Text(vec![Some(s.clone()); n])),
        Operand::Bool(b) => return Ok(Values::Bool(vec![Some(*b); n])),
        Operand::Column(name) => name,
    };
    let a = batch.column(column_index(batch, name)?).as_ref();
    Ok(match a.data_type() {
        DataType::Int8 => Values::Num(nums::<Int8Type>(a, f64::from)),
        DataType::Int16 => Values::Num(nums::<Int16Type>(a, f64::from)),
        DataType::Int32 => Values::Num(nums::<Int32Type>(a, f64::from)),
        DataType::Int64 => Values::Num(nums::<Int64Type>(a, |v| v as f64)),
        DataType::UInt8 => Values::Num(nums::<UInt8Type>(a, f64::from)),
        DataType::UInt16 => Values::Num(nums::<UInt16Type>(a, f64::from)),
        DataType::UInt32 => Values::Num(nums::<UInt32Type>(a, f64::from)),
        DataType::UInt64 => Values::Num(nums::<UInt64Type>(a, |v| v as f64)),
        DataType::Float32 => Values::Num(nums::<Float32Type>(a, f64::from)),
        DataType::Float64 => Values::Num(nums::<Float64Type>(a, |v| v)),
        DataType::Utf8 => Values::Text(
            a.as_string::<i32>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect(),
        ),
        DataType::LargeUtf8 => Values::Text(
            a.as_string::<i64>()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect(),
        ),
        DataType::Boolean => Values::Bool(a.as_boolean().iter().collect()),
        other => {
            return Err(TableError::Column {
                column: name.clone(),
                detail: format!("is {other}; predicates compare numbers, text and booleans only"),
            })
        }
    })
}

fn test<T: PartialOrd>(x: &T, op: CmpOp, y: &T) -> bool {
    match op {
        CmpOp::Eq => x == y,
        CmpOp::Ne => x != y,
        CmpOp::Lt => x < y,
        CmpOp::Le => x <= y,
        CmpOp::Gt => x > y,
        CmpOp::Ge => x >= y,
    }
}

fn cmp_all<T: PartialOrd>(a: Vec<Option<T>>, op: CmpOp, b: Vec<Option<T>>) -> Vec<Option<bool>> {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => Some(test(&x, op, &y)),
            _ => None,
        })
        .collect()
}

fn compare(
    batch: &RecordBatch,
    a: &Operand,
    op: CmpOp,
    b: &Operand,
) -> Result<Vec<Option<bool>>, TableError> {
    Ok(match (values(batch, a)?, values(batch, b)?) {
        (Values::Num(x), Values::Num(y)) => cmp_all(x, op, y),
        (Values::Text(x), Values::Text(y)) => cmp_all(x, op, y),
        (Values::Bool(x), Values::Bool(y)) => cmp_all(x, op, y),
        (x, y) => {
            let column = match (a, b) {
                (Operand::Column(c), _) | (_, Operand::Column(c)) => c.clone(),
                _ => operand_name(a),
            };
            return Err(TableError::Column {
                column,
                detail: format!(
                    "cannot compare {} with {} in `{} {op} {}`",
                    x.kind(),
                    y.kind(),
                    operand_name(a),
                    operand_name(b)
                ),
            });
        }
    })
}

/// The rows of `batch` for which `pred` is true.
pub fn filter(batch: &RecordBatch, pred: &Predicate) -> Result<RecordBatch, TableError> {
    let mask = pred.evaluate(batch)?;
    Ok(arrow_select::filter::filter_record_batch(batch, &mask)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::detections::tests::{face, line};
    use crate::table::{detections_batch, rows_of, Extras};

    fn table() -> RecordBatch {
        let mut a = face(1, 0.95);
        a.class = "cat".into();
        let rows = vec![face(1, 0.95), a, face(1, 0.5), line(1, "hi")];
        detections_batch(&rows, Extras::of_rows(&rows)).unwrap()
    }

    fn keep(text: &str) -> Vec<(String, f32)> {
        let pred = Predicate::parse(text).unwrap();
        rows_of(&filter(&table(), &pred).unwrap())
            .unwrap()
            .into_iter()
            .map(|r| (r.class, r.score))
            .collect()
    }

    #[test]
    fn filters_by_score_and_class() {
        assert_eq!(
            keep("score > 0.9 and class == 'face'"),
            [("face".into(), 0.95)]
        );
        assert_eq!(keep("score>0.9 AND class==\"cat\""), [("cat".into(), 0.95)]);
        assert_eq!(keep("class != 'face' or score <= 0.5").len(), 3);
        assert_eq!(keep("not (score >= 0.9)").len(), 2);
        assert_eq!(keep("true").len(), 4);
        assert_eq!(keep("false").len(), 0);
    }

    #[test]
    fn nulls_are_unknown_and_dropped() {
        // Only the text row has a text_score; `not` keeps unknown rows out too.
        assert_eq!(keep("text_score > 0.5").len(), 1);
        assert_eq!(keep("not text_score > 0.5").len(), 0);
        assert_eq!(keep("text_score > 0.5 or score > 0.9").len(), 3);
        assert_eq!(keep("seq == 1 and x1 >= -3.5e0").len(), 4);
    }

    #[test]
    fn unknown_columns_and_type_mismatches_are_named() {
        let e = Predicate::parse("scor > 1")
            .unwrap()
            .evaluate(&table())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'scor'") && e.contains("source, seq, class, score"),
            "{e}"
        );
        let e = Predicate::parse("class > 0.5")
            .unwrap()
            .evaluate(&table())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'class'") && e.contains("cannot compare text with a number"),
            "{e}"
        );
        let e = Predicate::parse("landmarks == 1")
            .unwrap()
            .evaluate(&table())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'landmarks'") && e.contains("FixedSizeList"),
            "{e}"
        );
        let e = Predicate::parse("score")
            .unwrap()
            .evaluate(&table())
            .unwrap_err();
        assert!(e.to_string().contains("not true/false"), "{e}");
    }
}
