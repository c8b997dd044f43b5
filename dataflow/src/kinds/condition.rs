//! The conditions of measures (`when`): one comparison of a field with a literal, such as
//! `status == "ok"`, `duration_ms > 30000` or `cached != true`. A missing field is null.

use std::cmp::Ordering;

use crate::kinds::record::{Fields, Scalar};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal compared with.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    path: String,
    op: Op,
    literal: Literal,
}

impl Condition {
    /// Parses `path OP literal` (OP one of `== != < <= > >=`; the literal a number, a
    /// double-quoted string, `true`, `false` or `null`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = "must look like `field == \"text\"`, `field > 10` or `field != null`";
        let text = text.trim();
        let at = text
            .find(['=', '!', '<', '>'])
            .ok_or_else(|| format!("{text:?} {shape}"))?;
        let (path, rest) = text.split_at(at);
        let path = path.trim();
        let (op, rest) = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find_map(|(token, op)| rest.strip_prefix(token).map(|rest| (op, rest.trim())))
        .ok_or_else(|| format!("{text:?} {shape}"))?;
        if path.is_empty()
            || path.split('.').any(str::is_empty)
            || path.contains(char::is_whitespace)
        {
            return Err(format!("{text:?}: {path:?} is not a field path"));
        }
        let literal = match rest {
            "null" => Literal::Null,
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            quoted if quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"') => {
                Literal::Text(quoted[1..quoted.len() - 1].to_owned())
            }
            number => match number.parse::<f64>() {
                Ok(value) if value.is_finite() => Literal::Number(value),
                _ => return Err(format!("{text:?}: {rest:?} is not a literal; {shape}")),
            },
        };
        if matches!(literal, Literal::Null | Literal::Bool(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!(
                "{text:?}: null and booleans compare with == or != only"
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            op,
            literal,
        })
    }

    /// Whether `record` satisfies it. Values of different types are unequal and unordered.
    pub fn holds(&self, record: &impl Fields) -> bool {
        let value = record.get(&self.path).unwrap_or(Scalar::Null);
        let order = match (&value, &self.literal) {
            (Scalar::Null, Literal::Null) => Some(Ordering::Equal),
            (Scalar::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
            (Scalar::Number(a), Literal::Number(b)) => a.partial_cmp(b),
            (Scalar::Text(a), Literal::Text(b)) => Some((*a).cmp(b.as_str())),
            _ => None,
        };
        match (self.op, order) {
            (Op::Eq, order) => order == Some(Ordering::Equal),
            (Op::Ne, order) => order != Some(Ordering::Equal),
            (_, None) => false,
            (Op::Lt, Some(o)) => o == Ordering::Less,
            (Op::Le, Some(o)) => o != Ordering::Greater,
            (Op::Gt, Some(o)) => o == Ordering::Greater,
            (Op::Ge, Some(o)) => o != Ordering::Less,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparisons_follow_their_types() {
        let record =
            json!({"status": "ok", "duration_ms": 1200, "net": {"cached": true}, "note": null});
        let cases = [
            ("status == \"ok\"", true),
            ("status != \"ok\"", false),
            ("duration_ms > 1000", true),
            ("duration_ms >= 1200", true),
            ("duration_ms < 1200", false),
            ("duration_ms <= 1200.0", true),
            ("net.cached == true", true),
            ("net.cached != false", true),
            ("note == null", true),
            ("missing == null", true),
            ("missing != \"ok\"", true),
            ("missing > 3", false),
            ("status > 3", false),
            ("status == 3", false),
            ("status < \"zz\"", true),
        ];
        for (text, expected) in cases {
            let condition = Condition::parse(text).unwrap();
            assert_eq!(condition.holds(&record), expected, "{text}");
        }
    }

    #[test]
    fn malformed_conditions_are_refused() {
        for text in [
            "status",
            "status ~ 1",
            "== 1",
            "a..b == 1",
            "x > null",
            "x == ok",
            "x == 1e999",
            "a b == 1",
        ] {
            assert!(Condition::parse(text).is_err(), "{text}");
        }
    }
}
