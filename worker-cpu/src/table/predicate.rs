//! The `table.filter {where}` predicate language:
//!
//! ```text
//! expr    := and ( "or" and )*
//! and     := not ( "and" not )*
//! not     := "not" not | primary
//! primary := "(" expr ")" | operand ( ("==" | "=" | "!=" | "<" | "<=" | ">" | ">=") operand )?
//! operand := column | number | 'text' | "text" | true | false
//! ```
//!
//! Keywords are case-insensitive. A comparison with a null cell is unknown, and
//! unknown rows are dropped (SQL's three-valued logic).

use super::{column_index, TableError};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::DataType;
use std::fmt;

/// A predicate that does not parse: where and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("predicate `{text}`, at character {pos}: expected {expected}, found {found}")]
pub struct PredicateError {
    pub text: String,
    /// 1-based character position.
    pub pos: usize,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column(String),
    Number(f64),
    Text(String),
    Bool(bool),
}

/// A parsed predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Or(Box<Predicate>, Box<Predicate>),
    And(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
    Cmp(Operand, CmpOp, Operand),
    /// A lone operand: a boolean column or `true` / `false`.
    Value(Operand),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(f64),
    Text(String),
    Op(CmpOp),
    Open,
    Close,
    Minus,
    End,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Number(n) => format!("number {n}"),
        Tok::Text(s) => format!("text '{s}'"),
        Tok::Op(op) => format!("'{op}'"),
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Minus => "'-'".into(),
        Tok::End => "the end".into(),
    }
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
}

impl Parser<'_> {
    fn err(&self, pos: usize, expected: &str, found: String) -> PredicateError {
        PredicateError {
            text: self.text.to_string(),
            pos: pos + 1,
            expected: expected.to_string(),
            found,
        }
    }
    fn peek(&self) -> &(usize, Tok) {
        // The lexer always ends the list with `End`, which is never consumed.
        &self.toks[self.at.min(self.toks.len() - 1)]
    }
    fn bump(&mut self) -> (usize, Tok) {
        let t = self.peek().clone();
        if t.1 != Tok::End {
            self.at += 1;
        }
        t
    }
    fn keyword(&mut self, word: &str) -> bool {
        if matches!(&self.peek().1, Tok::Ident(s) if s.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Result<Predicate, PredicateError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Predicate::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }
    fn and(&mut self) -> Result<Predicate, PredicateError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Predicate::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }
    fn not(&mut self) -> Result<Predicate, PredicateError> {
        if self.keyword("not") {
            return Ok(Predicate::Not(Box::new(self.not()?)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Predicate, PredicateError> {
        if self.peek().1 == Tok::Open {
            self.bump();
            let inner = self.or()?;
            let (pos, t) = self.bump();
            if t != Tok::Close {
                return Err(self.err(pos, "')'", describe(&t)));
            }
            return Ok(inner);
        }
        let left = self.operand("a column, a number, a quoted text, true, false, 'not' or '('")?;
        if let Tok::Op(op) = self.peek().1 {
            self.bump();
            let right = self.operand("a column, a number, a quoted text, true or false")?;
            return Ok(Predicate::Cmp(left, op, right));
        }
        Ok(Predicate::Value(left))
    }
    fn operand(&mut self, expected: &str) -> Result<Operand, PredicateError> {
        let (pos, t) = self.bump();
        Ok(match t {
            Tok::Number(n) => Operand::Number(n),
            Tok::Text(s) => Operand::Text(s),
            Tok::Minus => match self.bump() {
                (_, Tok::Number(n)) => Operand::Number(-n),
                (p, other) => return Err(self.err(p, "a number after '-'", describe(&other))),
            },
            Tok::Ident(s) if s.eq_ignore_ascii_case("true") => Operand::Bool(true),
            Tok::Ident(s) if s.eq_ignore_ascii_case("false") => Operand::Bool(false),
            Tok::Ident(s)
                if ["and", "or", "not"]
                    .iter()
                    .any(|k| s.eq_ignore_ascii_case(k)) =>
            {
                return Err(self.err(pos, expected, format!("the keyword '{s}'")))
            }
            Tok::Ident(s) => Operand::Column(s),
            other => return Err(self.err(pos, expected, describe(&other))),
        })
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, PredicateError> {
    let chars: Vec<char> = text.chars().collect();
    let err = |pos: usize, expected: &str, found: String| PredicateError {
        text: text.to_string(),
        pos: pos + 1,
        expected: expected.to_string(),
        found,
    };
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let two = |next: char| chars.get(i + 1) == Some(&next);
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => Tok::Open,
            ')' => Tok::Close,
            '-' => Tok::Minus,
            '=' if two('=') => Tok::Op(CmpOp::Eq),
            '=' => Tok::Op(CmpOp::Eq),
            '!' if two('=') => Tok::Op(CmpOp::Ne),
            '<' if two('=') => Tok::Op(CmpOp::Le),
            '<' => Tok::Op(CmpOp::Lt),
            '>' if two('=') => Tok::Op(CmpOp::Ge),
            '>' => Tok::Op(CmpOp::Gt),
            '\'' | '"' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&q| q == c)
                    .ok_or_else(|| err(i, &format!("a closing {c}"), "the end".into()))?;
                let s: String = chars[i + 1..i + 1 + close].iter().collect();
                i += close + 2;
                toks.push((start, Tok::Text(s)));
                continue;
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n = s
                    .parse::<f64>()
                    .map_err(|_| err(start, "a number", format!("'{s}'")))?;
                toks.push((start, Tok::Number(n)));
                continue;
            }
            c if c.is_alphabetic() || c == '_' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                toks.push((start, Tok::Ident(chars[start..i].iter().collect())));
                continue;
            }
            other => {
                return Err(err(
                    i,
                    "a column, a number, a quoted text, an operator or a parenthesis",
                    format!("'{other}'"),
                ))
            }
        };
        i += if matches!(tok, Tok::Op(_)) && chars.get(i + 1) == Some(&'=') {
            2
        } else {
            1
        };
        toks.push((start, tok));
    }
    toks.push((chars.len(), Tok::End));
    Ok(toks)
}

impl Predicate {
    /// Parse a predicate; errors give the position and what was expected there.
    pub fn parse(text: &str) -> Result<Predicate, PredicateError> {
        let mut p = Parser {
            text,
            toks: lex(text)?,
            at: 0,
        };
        let pred = p.or()?;
        let (pos, t) = p.bump();
        if t != Tok::End {
            return Err(p.err(pos, "'and', 'or', a comparison or the end", describe(&t)));
        }
        Ok(pred)
    }

    /// Evaluate on every row: true, false or null (unknown).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray, TableError> {
        Ok(self.eval(batch)?.into_iter().collect())
    }

    fn eval(&self, batch: &RecordBatch) -> Result<Vec<Option<bool>>, TableError> {
        Ok(match self {
            Predicate::Or(a, b) => zip(a.eval(batch)?, b.eval(batch)?, |x, y| match (x, y) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            }),
            Predicate::And(a, b) => zip(a.eval(batch)?, b.eval(batch)?, |x, y| match (x, y) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            }),
            Predicate::Not(a) => a.eval(batch)?.into_iter().map(|v| v.map(|b| !b)).collect(),
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
    fn parse_errors_say_where_and_what() {
        let e = Predicate::parse("score > ").unwrap_err();
        assert_eq!(e.pos, 9);
        assert!(e.expected.contains("a column, a number"), "{e}");
        assert!(e.to_string().contains("found the end"), "{e}");
        let e = Predicate::parse("(score > 1").unwrap_err();
        assert_eq!((e.pos, e.expected.as_str()), (11, "')'"));
        let e = Predicate::parse("class == 'face").unwrap_err();
        assert_eq!(e.pos, 10);
        let e = Predicate::parse("score > 1 class").unwrap_err();
        assert!(e.to_string().contains("found 'class'"), "{e}");
        let e = Predicate::parse("x2 - 1 > 0").unwrap_err();
        assert!(e.to_string().contains("found '-'"), "no arithmetic: {e}");
        let e = Predicate::parse("score # 1").unwrap_err();
        assert!(e.to_string().contains("'#'"), "{e}");
        let e = Predicate::parse("score > and").unwrap_err();
        assert!(e.to_string().contains("keyword 'and'"), "{e}");
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
