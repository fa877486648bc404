//! JSON kept exactly: the canonical form of an event (keys sorted, no spaces) that keeps
//! every number as it was written, and a comparison of two JSON texts by value with
//! numbers compared as exact decimals.
//!
//! `serde_json::Value` holds a number as an `f64` or a 64-bit integer, so a round trip
//! through it turns `123456789012345678901234567890` into `1.2345678901234568e+29` and
//! `0.10000000000000000001` into `0.1`, and an archive of such events would not hold
//! what the backend wrote. Here serde_json still parses and validates the text, but every
//! value is captured as its raw text (`RawValue`) and only strings and object keys are
//! decoded: a number is copied through verbatim.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object, in the order written, keys decoded, values raw.
pub(crate) struct Members<'a>(pub(crate) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut v = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    v.push((k, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A decoded object key, borrowed from the text when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The members of the object `raw`, sorted by key; a key written twice is refused (which
/// of the two values a reader takes differs between parsers, so such an object cannot be
/// kept exactly).
///
/// # Errors
/// The reason in words: not an object, or a duplicate key.
pub(crate) fn sorted_members(raw: &RawValue) -> Result<Vec<(Cow<'_, str>, &RawValue)>, String> {
    let Members(mut m) = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    m.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = m.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("the key {:?} appears twice", w[0].0));
    }
    Ok(m)
}

/// Appends the canonical form of `raw` to `out`: objects with their keys sorted, no
/// whitespace, strings as serde_json writes them, numbers, `true`, `false` and `null`
/// exactly as written.
///
/// # Errors
/// The reason in words (a key written twice).
pub(crate) fn write_canonical(raw: &RawValue, out: &mut Vec<u8>) -> Result<(), String> {
    let text = trim(raw.get());
    match text.as_bytes().first() {
        Some(b'{') => {
            out.push(b'{');
            for (i, (k, v)) in sorted_members(raw)?.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, &k).map_err(|e| e.to_string())?;
                out.push(b':');
                write_canonical(v, out)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            out.push(b'[');
            for (i, v) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let s: Cow<'_, str> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            serde_json::to_writer(&mut *out, &s).map_err(|e| e.to_string())?;
        }
        _ => out.extend_from_slice(text.as_bytes()),
    }
    Ok(())
}

/// The text without JSON's whitespace around it.
fn trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r'])
}

/// Whether two JSON texts hold the same value: objects with the same keys (in any order)
/// and equal values, arrays equal item by item, strings with the same characters (however
/// escaped), numbers equal as exact decimals (`1e2`, `100` and `100.0` are equal;
/// `0.10000000000000000001` and `0.1` are not), as Python's `json` with `Decimal` reads
/// them. It shares no code with the canonical form beyond serde_json's parser, so it
/// checks what compaction keeps against what it read.
pub fn same_value(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<&RawValue>(a),
        serde_json::from_str::<&RawValue>(b),
    ) {
        (Ok(a), Ok(b)) => same_raw(a, b, 0),
        _ => false,
    }
}

/// Nesting deeper than serde_json's own recursion limit cannot have been parsed.
const DEPTH_MAX: usize = 256;

fn same_raw(a: &RawValue, b: &RawValue, depth: usize) -> bool {
    if depth > DEPTH_MAX {
        return false;
    }
    let (ta, tb) = (trim(a.get()), trim(b.get()));
    match (ta.as_bytes().first(), tb.as_bytes().first()) {
        (Some(b'{'), Some(b'{')) => {
            let (Ok(Members(mut ma)), Ok(Members(mut mb))) = (
                serde_json::from_str::<Members<'_>>(ta),
                serde_json::from_str::<Members<'_>>(tb),
            ) else {
                return false;
            };
            ma.sort_by(|x, y| x.0.cmp(&y.0));
            mb.sort_by(|x, y| x.0.cmp(&y.0));
            ma.len() == mb.len()
                && ma
                    .iter()
                    .zip(&mb)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_raw(va, vb, depth + 1))
        }
        (Some(b'['), Some(b'[')) => {
            let (Ok(ia), Ok(ib)) = (
                serde_json::from_str::<Vec<&RawValue>>(ta),
                serde_json::from_str::<Vec<&RawValue>>(tb),
            ) else {
                return false;
            };
            ia.len() == ib.len() && ia.iter().zip(&ib).all(|(x, y)| same_raw(x, y, depth + 1))
        }
        (Some(b'"'), Some(b'"')) => {
            matches!(
                (serde_json::from_str::<Cow<'_, str>>(ta), serde_json::from_str::<Cow<'_, str>>(tb)),
                (Ok(x), Ok(y)) if x == y
            )
        }
        (Some(x), Some(y)) if is_number_start(*x) && is_number_start(*y) => {
            Decimal::parse(ta) == Decimal::parse(tb)
        }
        _ => ta == tb,
    }
}

fn is_number_start(b: u8) -> bool {
    b == b'-' || b.is_ascii_digit()
}

/// A JSON number as an exact decimal: sign, significant digits (no leading or trailing
/// zeros), and the power of ten of the last digit. Zero is one value, whatever its sign.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i128,
}

impl Decimal {
    /// `None` for a text that is not a JSON number (then it equals nothing).
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i128>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all: String = int.chars().chain(frac.chars()).collect();
        let trimmed = all.trim_start_matches('0');
        let significant = trimmed.trim_end_matches('0');
        if significant.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        let trailing = (trimmed.len() - significant.len()) as i128;
        Some(Decimal {
            negative,
            digits: significant.to_owned(),
            exponent: exp - frac.len() as i128 + trailing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Result<String, String> {
        let raw: &RawValue = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        write_canonical(raw, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn numbers_keep_their_text_and_keys_are_sorted() {
        assert_eq!(
            canonical(
                r#" { "b" : [ 123456789012345678901234567890 , 0.10000000000000000001 ],
                  "a" : { "z" : 1e-400, "y" : -0.0 , "x": 1.0E+2 } } "#
            )
            .unwrap(),
            r#"{"a":{"x":1.0E+2,"y":-0.0,"z":1e-400},"b":[123456789012345678901234567890,0.10000000000000000001]}"#
        );
        assert_eq!(
            canonical(r#"{"s":"\u00e9\n\"\u0001"}"#).unwrap(),
            "{\"s\":\"é\\n\\\"\\u0001\"}"
        );
    }

    #[test]
    fn a_key_written_twice_is_refused() {
        let e = canonical(r#"{"a":1,"b":{"c":1,"c":2}}"#).unwrap_err();
        assert!(e.contains("\"c\" appears twice"), "{e}");
    }

    #[test]
    fn values_compare_exactly() {
        assert!(same_value(
            r#"{"a":1e2,"b":"\u00e9"}"#,
            r#"{"b":"é","a":100.0}"#
        ));
        assert!(same_value("0", "-0.0e5"));
        assert!(same_value("1.50", "15e-1"));
        assert!(!same_value("0.10000000000000000001", "0.1"));
        assert!(!same_value(
            "123456789012345678901234567890",
            "1.2345678901234568e+29"
        ));
        assert!(!same_value("1e-400", "0.0"));
        assert!(!same_value(r#"{"a":1}"#, r#"{"a":1,"b":2}"#));
        assert!(!same_value("[1,2]", "[2,1]"));
        assert!(!same_value("true", "1"));
    }
}
