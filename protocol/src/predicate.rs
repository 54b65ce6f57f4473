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
//!
//! Parsing lives here, in `protocol`, so that `validate` (in the supervisor) checks a
//! `where` without linking the Arrow evaluator; `worker-cpu` evaluates the parsed
//! predicate on its tables.

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

/// The deepest nesting of `(` and `not` a predicate may have: the parser and the
/// evaluator recurse once per level, and a `where` is written by hand.
pub const MAX_DEPTH: usize = 64;
/// The most comparisons and values a predicate may hold (its `and`/`or` chains are
/// evaluated as a tree of that many leaves).
pub const MAX_TERMS: usize = 256;

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(usize, Tok)>,
    at: usize,
    /// Open `(` and `not` around the current position.
    depth: usize,
    /// Comparisons and values parsed so far.
    terms: usize,
}

impl Parser<'_> {
    fn err(&self, pos: usize, expected: &str, found: String) -> PredicateError {
        PredicateError {
            text: crate::text::shown_up_to(self.text, 200),
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
    /// One more level of `(` or `not` at token position `pos`, refused past [`MAX_DEPTH`].
    fn deeper(&mut self, pos: usize) -> Result<(), PredicateError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(
                pos,
                &format!("at most {MAX_DEPTH} levels of '(' and 'not'"),
                "a deeper one".into(),
            ));
        }
        Ok(())
    }
    fn not(&mut self) -> Result<Predicate, PredicateError> {
        let pos = self.peek().0;
        if self.keyword("not") {
            self.deeper(pos)?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Predicate::Not(Box::new(inner)));
        }
        self.primary()
    }
    fn primary(&mut self) -> Result<Predicate, PredicateError> {
        if self.peek().1 == Tok::Open {
            let (open, _) = self.bump();
            self.deeper(open)?;
            let inner = self.or()?;
            self.depth -= 1;
            let (pos, t) = self.bump();
            if t != Tok::Close {
                return Err(self.err(pos, "')'", describe(&t)));
            }
            return Ok(inner);
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            let pos = self.peek().0;
            return Err(self.err(
                pos,
                &format!("at most {MAX_TERMS} comparisons or values"),
                "more".into(),
            ));
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
            depth: 0,
            terms: 0,
        };
        let pred = p.or()?;
        let (pos, t) = p.bump();
        if t != Tok::End {
            return Err(p.err(pos, "'and', 'or', a comparison or the end", describe(&t)));
        }
        Ok(pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_long_predicates_are_refused_with_the_limit_not_a_stack_overflow() {
        let deep = format!("{}score > 0{}", "(".repeat(20_000), ")".repeat(20_000));
        let e = Predicate::parse(&deep).unwrap_err();
        assert_eq!(e.pos, MAX_DEPTH + 1, "{e}");
        assert!(e.to_string().contains("at most 64 levels"), "{e}");
        assert!(
            e.text.chars().count() < 300,
            "the message quotes a short prefix"
        );
        let nots = format!("{}true", "not ".repeat(20_000));
        assert!(Predicate::parse(&nots).is_err());
        let long = vec!["score > 0.1"; 20_000].join(" and ");
        let e = Predicate::parse(&long).unwrap_err();
        assert!(e.to_string().contains("at most 256 comparisons"), "{e}");
        // At the limits it parses.
        let ok = format!(
            "{}score > 0{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        Predicate::parse(&ok).expect("64 levels");
        Predicate::parse(&vec!["score > 0.1"; MAX_TERMS].join(" or ")).expect("256 terms");
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
}
