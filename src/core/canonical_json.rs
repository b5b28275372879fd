//! RFC 8785 JSON Canonicalization Scheme (JCS), so that every caller language
//! fingerprints the same JSON request identically.
//!
//! The input must be I-JSON (RFC 7493): duplicate object members and lone
//! surrogates are rejected rather than resolved, because two parsers resolving
//! them differently would give one request two fingerprints. Numbers are IEEE
//! doubles printed the way ECMAScript prints them; object members are sorted by
//! their UTF-16 code units; strings use the minimal JSON escapes.
//!
//! A number that its canonical form would turn into another number is refused
//! (see [`check_numbers`]): two different requests must never share a
//! fingerprint, and `1234567890123456789` and `1234567890123456788` would both
//! be written `1234567890123456800`.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a payload cannot be canonicalized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// Not JSON, not I-JSON, or nested deeper than the parser allows.
    #[error("payload is not valid I-JSON: {0}")]
    Invalid(String),
    /// A number that canonical JSON would write as another number, so that it
    /// could not be told apart from it; `pointer` (RFC 6901) says where.
    #[error(
        "the number at {pointer:?} cannot be fingerprinted exactly: canonical JSON (RFC 8785) holds numbers as IEEE 754 doubles, which would make it a different number; send it as a string"
    )]
    InexactNumber { pointer: String },
    /// An `ignore_fields` entry is not a JSON Pointer.
    #[error("{pointer:?} is not a JSON Pointer (RFC 6901): {why}")]
    BadPointer { pointer: String, why: &'static str },
}

/// A parsed JSON value in which every number is already a double, as JCS
/// requires, and object members keep their input order until serialization.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Canonical form of `data` after removing the members and elements named by
/// `ignore_pointers` (applied in the given order; a pointer that matches
/// nothing is ignored, since the guarded field may be optional).
pub fn canonicalize(data: &[u8], ignore_pointers: &[String]) -> Result<Vec<u8>, CanonicalJsonError> {
    let value = parse_without(data, ignore_pointers)?;
    let mut out = Vec::with_capacity(data.len());
    write_value(&value, &mut out);
    Ok(out)
}

/// The canonical form of a JSON payload, and, when it is an object, the
/// canonical form of each top-level member's value, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    pub bytes: Vec<u8>,
    /// (member name, canonical value); None unless the payload is an object.
    pub members: Option<Vec<(String, Vec<u8>)>>,
}

/// [`canonicalize`], keeping each top-level member's canonical value too, so
/// that two requests can be compared member by member.
pub fn canonicalize_members(data: &[u8], ignore_pointers: &[String]) -> Result<Canonical, CanonicalJsonError> {
    let value = parse_without(data, ignore_pointers)?;
    let Json::Object(members) = value else {
        let mut bytes = Vec::with_capacity(data.len());
        write_value(&value, &mut bytes);
        return Ok(Canonical { bytes, members: None });
    };
    let mut members: Vec<(String, Vec<u8>)> = members
        .into_iter()
        .map(|(name, member)| {
            let mut canonical = Vec::new();
            write_value(&member, &mut canonical);
            (name, canonical)
        })
        .collect();
    members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    // The whole object is its members in canonical order, so it is written
    // from them rather than serialized a second time.
    let mut bytes = Vec::with_capacity(data.len());
    bytes.push(b'{');
    for (i, (name, canonical)) in members.iter().enumerate() {
        if i > 0 {
            bytes.push(b',');
        }
        write_string(name, &mut bytes);
        bytes.push(b':');
        bytes.extend_from_slice(canonical);
    }
    bytes.push(b'}');
    Ok(Canonical { bytes, members: Some(members) })
}

fn parse_without(data: &[u8], ignore_pointers: &[String]) -> Result<Json, CanonicalJsonError> {
    let mut value = parse(data)?;
    for pointer in ignore_pointers {
        let tokens = parse_pointer(pointer)?;
        remove_at(&mut value, &tokens);
    }
    Ok(value)
}

fn parse(data: &[u8]) -> Result<Json, CanonicalJsonError> {
    // serde_json rejects lone surrogates, out-of-range numbers and nesting
    // beyond 128 levels; our visitor rejects duplicate members.
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    let value = Json::deserialize(&mut deserializer).map_err(|e| CanonicalJsonError::Invalid(e.to_string()))?;
    deserializer.end().map_err(|e| CanonicalJsonError::Invalid(e.to_string()))?;
    check_numbers(&value, data)?;
    Ok(value)
}

/// Refuses a number whose canonical form is a different number.
///
/// RFC 8785 keeps a number as the nearest double, written in the shortest form
/// that reads back as that double: so every double has exactly one number
/// that is kept as it is, and that is the only one accepted. `1`, `1.0`, `1e0`
/// (and `-0`, `0`) are one number and are accepted; `0.1` is accepted (it is
/// the shortest form of its double) but `0.10000000000000000001` is refused,
/// as are `1234567890123456789` (written `1234567890123456800`) and
/// `1152921504606846976` (2^60, a double, but written `1152921504606847000`).
///
/// The check is made on the parsed document, before `ignore_fields` apply:
/// a client library can then make the same check while parsing, and an app
/// behind a middleware never receives a number its parser changed.
fn check_numbers(value: &Json, data: &[u8]) -> Result<(), CanonicalJsonError> {
    // serde_json hands us only the double, so the literal is read from the
    // text; both walk the document in order, so the n-th number visited is
    // the n-th literal.
    let mut literals = NumberLiterals { data, at: 0 };
    let mut path = Vec::new();
    check_number_in(value, &mut literals, &mut path)
}

/// A step of a JSON Pointer, kept unescaped until an error needs the pointer.
enum Step<'a> {
    Member(&'a str),
    Index(usize),
}

fn check_number_in<'a>(
    value: &'a Json,
    literals: &mut NumberLiterals,
    path: &mut Vec<Step<'a>>,
) -> Result<(), CanonicalJsonError> {
    match value {
        Json::Number(n) => {
            let same = literals.next().and_then(Decimal::parse).is_some_and(|literal| {
                let mut canonical = Vec::new();
                write_number(*n, &mut canonical);
                Decimal::parse(&canonical) == Some(literal)
            });
            if same { Ok(()) } else { Err(CanonicalJsonError::InexactNumber { pointer: pointer_to(path) }) }
        }
        Json::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            path.push(Step::Index(i));
            check_number_in(item, literals, path)?;
            path.pop();
            Ok(())
        }),
        Json::Object(members) => members.iter().try_for_each(|(name, member)| {
            path.push(Step::Member(name));
            check_number_in(member, literals, path)?;
            path.pop();
            Ok(())
        }),
        Json::Null | Json::Bool(_) | Json::String(_) => Ok(()),
    }
}

fn pointer_to(path: &[Step]) -> String {
    let mut pointer = String::new();
    for step in path {
        pointer.push('/');
        match step {
            Step::Member(name) => pointer.push_str(&name.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => pointer.push_str(&i.to_string()),
        }
    }
    pointer
}

/// The number literals of valid JSON text, in document order: outside
/// strings, only a number has a '-' or a digit.
struct NumberLiterals<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Iterator for NumberLiterals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let data = self.data;
        while let Some(&byte) = data.get(self.at) {
            self.at += 1;
            match byte {
                b'"' => {
                    while let Some(&byte) = data.get(self.at) {
                        self.at += if byte == b'\\' { 2 } else { 1 };
                        if byte == b'"' {
                            break;
                        }
                    }
                }
                b'-' | b'0'..=b'9' => {
                    let start = self.at - 1;
                    while data.get(self.at).is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    {
                        self.at += 1;
                    }
                    return Some(&data[start..self.at]);
                }
                _ => {}
            }
        }
        None
    }
}

/// The exact value of a JSON number literal: `digits` × 10^`exponent`, with
/// no leading or trailing zeros in `digits`, so that equal values are equal
/// structs whatever their spelling. Zero (either sign) has no digits.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// None if `literal` is not a JSON number, or its exponent is beyond
    /// i64 (and its value so beyond any double's).
    fn parse(literal: &[u8]) -> Option<Decimal> {
        let (negative, rest) = match literal.strip_prefix(b"-") {
            Some(rest) => (true, rest),
            None => (false, literal),
        };
        let (mantissa, exponent) = match rest.iter().position(|b| matches!(b, b'e' | b'E')) {
            Some(e) => (&rest[..e], Some(&rest[e + 1..])),
            None => (rest, None),
        };
        let (integer, fraction) = match mantissa.iter().position(|&b| b == b'.') {
            Some(dot) => (&mantissa[..dot], &mantissa[dot + 1..]),
            None => (mantissa, &[][..]),
        };
        let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
        if !all_digits(integer) || (mantissa.len() > integer.len() && !all_digits(fraction)) {
            return None;
        }
        let mut digits: Vec<u8> = integer.iter().chain(fraction).copied().skip_while(|&d| d == b'0').collect();
        let trailing_zeros = digits.iter().rev().take_while(|&&d| d == b'0').count();
        digits.truncate(digits.len() - trailing_zeros);
        if digits.is_empty() {
            return Some(Decimal { negative: false, digits, exponent: 0 });
        }
        let written: i64 = match exponent {
            None => 0,
            Some(e) => {
                let (sign, e) = match e.first() {
                    Some(b'-') => (-1, &e[1..]),
                    Some(b'+') => (1, &e[1..]),
                    _ => (1, e),
                };
                if !all_digits(e) {
                    return None;
                }
                std::str::from_utf8(e).ok()?.parse::<i64>().ok()? * sign
            }
        };
        let exponent = written
            .checked_sub(i64::try_from(fraction.len()).ok()?)?
            .checked_add(i64::try_from(trailing_zeros).ok()?)?;
        Some(Decimal { negative, digits, exponent })
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    // Integers become doubles, as in every JavaScript parser: JCS defines
    // numbers by their IEEE 754 double value.
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v as f64))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Number(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut seen = HashSet::new();
        let mut members = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name.clone()) {
                return Err(de::Error::custom(format_args!("duplicate object member {name:?}")));
            }
            members.push((name, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// Splits an RFC 6901 pointer into unescaped reference tokens.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, CanonicalJsonError> {
    let bad = |why| CanonicalJsonError::BadPointer { pointer: pointer.to_owned(), why };
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(bad("must start with '/' (the whole document cannot be ignored)"));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match c {
                    '~' => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(bad("'~' must be followed by '0' or '1'")),
                    },
                    c => out.push(c),
                }
            }
            Ok(out)
        })
        .collect()
}

fn remove_at(value: &mut Json, tokens: &[String]) {
    let Some((last, parents)) = tokens.split_last() else { return };
    let mut target = value;
    for token in parents {
        target = match child_mut(target, token) {
            Some(child) => child,
            None => return,
        };
    }
    match target {
        Json::Object(members) => members.retain(|(name, _)| name != last),
        Json::Array(items) => {
            if let Some(index) = array_index(last, items.len()) {
                items.remove(index);
            }
        }
        _ => {}
    }
}

fn child_mut<'a>(value: &'a mut Json, token: &str) -> Option<&'a mut Json> {
    match value {
        Json::Object(members) => members.iter_mut().find(|(name, _)| name == token).map(|(_, v)| v),
        Json::Array(items) => {
            let index = array_index(token, items.len())?;
            items.get_mut(index)
        }
        _ => None,
    }
}

/// RFC 6901 array indexes: decimal digits without leading zeros.
fn array_index(token: &str, len: usize) -> Option<usize> {
    let well_formed =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    let index: usize = if well_formed { token.parse().ok()? } else { return None };
    (index < len).then_some(index)
}

fn write_value(value: &Json, out: &mut Vec<u8>) {
    match value {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(true) => out.extend_from_slice(b"true"),
        Json::Bool(false) => out.extend_from_slice(b"false"),
        Json::Number(n) => write_number(*n, out),
        Json::String(s) => write_string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        Json::Object(members) => {
            let mut sorted: Vec<&(String, Json)> = members.iter().collect();
            // JCS sorts by UTF-16 code units, which differs from UTF-8 byte
            // order for characters above U+FFFF versus U+E000..U+FFFF.
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, (name, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_value(member, out);
            }
            out.push(b'}');
        }
    }
}

/// ECMAScript `Number.prototype.toString`, which JCS adopts. Parsed JSON has
/// no NaN or infinities, so every value here is finite.
fn write_number(n: f64, out: &mut Vec<u8>) {
    if n == 0.0 {
        // Both zeros print as "0".
        out.push(b'0');
    } else {
        out.extend_from_slice(ryu_js::Buffer::new().format_finite(n).as_bytes());
    }
}

/// JCS string escaping is exactly serde_json's: `\"`, `\\`, `\b \f \n \r \t`,
/// other control characters as lowercase `\u00xx`, everything else literal.
fn write_string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("writing a str into a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str) -> String {
        String::from_utf8(canonicalize(input.as_bytes(), &[]).expect("valid input")).expect("utf-8 output")
    }

    fn canon_ignoring(input: &str, pointers: &[&str]) -> String {
        let pointers: Vec<String> = pointers.iter().map(|p| p.to_string()).collect();
        String::from_utf8(canonicalize(input.as_bytes(), &pointers).expect("valid input")).expect("utf-8 output")
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        assert_eq!(canon(r#"{"b":1,"a":true}"#), r#"{"a":true,"b":1}"#);
        assert_eq!(canon("{ \"a\" : true ,\n\t\"b\": 1 }"), r#"{"a":true,"b":1}"#);
        assert_eq!(canon(r#"{"b":1,"a":true}"#), canon(r#"{ "a": true, "b": 1 }"#));
    }

    #[test]
    fn nested_objects_are_sorted_and_arrays_keep_their_order() {
        assert_eq!(
            canon(r#"{"z":[3,{"y":1,"x":[2,1]}],"a":{"d":null,"c":[]}}"#),
            r#"{"a":{"c":[],"d":null},"z":[3,{"x":[2,1],"y":1}]}"#
        );
        assert_eq!(canon("[[[]],[[1]]]"), "[[[]],[[1]]]");
    }

    #[test]
    fn members_sort_by_utf16_code_units_not_utf8_bytes() {
        // U+1F600 (surrogates D83D DE00) sorts before U+FB01 in UTF-16,
        // although its UTF-8 bytes (F0 ..) sort after U+FB01's (EF ..).
        assert_eq!(canon("{\"\u{fb01}\":1,\"\u{1f600}\":2}"), "{\"\u{1f600}\":2,\"\u{fb01}\":1}");
        // The RFC 8785 section 3.2.3 example.
        assert_eq!(
            canon(
                "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}"
            ),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn unicode_escapes_are_resolved_and_controls_escaped_minimally() {
        assert_eq!(canon(r#""\u0041\u00e9\ud83d\ude00""#), "\"A\u{e9}\u{1f600}\"");
        assert_eq!(canon(r#""\/""#), r#""/""#);
        assert_eq!(canon(r#""\u0008\u0009\u000a\u000c\u000d\u001f""#), r#""\b\t\n\f\r\u001f""#);
        assert_eq!(canon(r#""\u007f\u2028""#), "\"\u{7f}\u{2028}\"");
        assert_eq!(canon(r#""quote\" back\\""#), r#""quote\" back\\""#);
    }

    #[test]
    fn numbers_print_as_ecmascript_does() {
        // From RFC 8785 appendix B and the ECMAScript rules.
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("1.0", "1"),
            ("1e0", "1"),
            ("100", "100"),
            ("1E2", "100"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("9007199254740992", "9007199254740992"),
            ("1152921504606847000", "1152921504606847000"),
            ("1.2345678901234569e23", "1.2345678901234569e+23"),
            ("-1.5e-3", "-0.0015"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("333333333.3333333", "333333333.3333333"),
            ("0.1", "0.1"),
            ("0.10000", "0.1"),
            ("-0e999999999999999999999", "0"),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), expected, "input {input}");
        }
        // Literals refused as input (see below), printed from their doubles.
        for (literal, expected) in [
            ("333333333.33333329", "333333333.3333333"),
            ("123456789012345678901234", "1.2345678901234569e+23"),
            ("9007199254740993", "9007199254740992"),
        ] {
            let mut out = Vec::new();
            write_number(literal.parse().expect("a double"), &mut out);
            assert_eq!(String::from_utf8(out).expect("ascii"), expected);
        }
    }

    fn refused_at(input: &str) -> String {
        match canonicalize(input.as_bytes(), &[]) {
            Err(CanonicalJsonError::InexactNumber { pointer }) => pointer,
            other => panic!("{input}: expected an inexact number, got {other:?}"),
        }
    }

    #[test]
    fn a_number_its_canonical_form_would_change_is_refused_naming_where_it_is() {
        // Issue 26: two account ids that a double cannot tell apart.
        assert_eq!(refused_at(r#"{"account_id":1234567890123456789}"#), "/account_id");
        assert_eq!(refused_at(r#"{"account_id":1234567890123456788}"#), "/account_id");
        for (input, pointer) in [
            ("9007199254740993", ""),
            ("123456789012345678901234", ""),
            // 2^60 is a double, but RFC 8785 writes it 1152921504606847000.
            ("[1152921504606846976]", "/0"),
            ("[0.1, 0.10000000000000000001]", "/1"),
            ("333333333.33333329", ""),
            ("1e-400", ""),
            ("0.1e-400", ""),
            (&"1".repeat(300), ""),
            (r#"{"a":{"b/c~":[1,{"d":-12345678901234567891}]}}"#, "/a/b~1c~0/1/d"),
            // Digits and quotes inside strings are not numbers.
            (r#"{"x\"1":"2\\","y":[3,"4",18446744073709551615]}"#, "/y/2"),
        ] {
            assert_eq!(refused_at(input), pointer, "input {input}");
        }
        let message = canonicalize(br#"{"account_id":1234567890123456789}"#, &[]).unwrap_err().to_string();
        assert!(message.contains(r#""/account_id""#) && message.contains("send it as a string"), "{message}");
        // Refused even in an ignored member: the check is made while parsing,
        // as a client library can make it too.
        let ignored = canonicalize(br#"{"a":1,"nonce":1234567890123456789}"#, &["/nonce".to_owned()]);
        assert_eq!(ignored, Err(CanonicalJsonError::InexactNumber { pointer: "/nonce".into() }));
    }

    #[test]
    fn one_number_in_any_spelling_keeps_one_canonical_form() {
        for (spellings, canonical) in [
            (&["1", "1.0", "1e0", "10e-1", "0.1e1", "1.000E+0"][..], "1"),
            (&["0", "-0", "0.0", "-0.0e5", "0e-7"][..], "0"),
            (&["9007199254740992", "9.007199254740992e15"][..], "9007199254740992"),
            (&["1e21", "1000000000000000000000", "1E+21"][..], "1e+21"),
            (&["0.1", "1e-1", "0.10"][..], "0.1"),
            (&["-1.5e-3", "-0.0015"][..], "-0.0015"),
        ] {
            for spelling in spellings {
                assert_eq!(canon(spelling), canonical, "{spelling}");
            }
        }
    }

    #[test]
    fn decimals_compare_by_value_not_spelling() {
        let d = |s: &str| Decimal::parse(s.as_bytes());
        assert_eq!(d("1.0"), d("1"));
        assert_eq!(d("100"), d("1e2"));
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("0.00120"), d("1.2e-3"));
        assert_ne!(d("1"), d("-1"));
        assert_ne!(d("0.1"), d("0.10000000000000000001"));
        assert_eq!(d("1e99999999999999999999"), None);
        assert_eq!(d("0e99999999999999999999"), d("0"));
        for not_a_number in ["", "-", "1.", ".5", "1e", "e1", "1x"] {
            assert_eq!(d(not_a_number), None, "{not_a_number}");
        }
    }

    /// The RFC's example, but for `333333333.33333329`, which RFC 8785 writes
    /// as another number (`333333333.3333333`) and is therefore refused here.
    #[test]
    fn the_rfc_8785_example_canonicalizes_exactly() {
        let input = r#"{
          "numbers": [333333333.3333333, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon(input),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }

    #[test]
    fn invalid_json_is_rejected_not_guessed() {
        for input in [
            "",
            "{",
            "{\"a\":1,\"a\":2}",
            "{\"a\":{\"b\":1,\"b\":1}}",
            "[1,]",
            "NaN",
            "1e400",
            "\"\\ud800\"",
            "{} {}",
            "'single'",
        ] {
            assert!(
                matches!(canonicalize(input.as_bytes(), &[]), Err(CanonicalJsonError::Invalid(_))),
                "accepted {input:?}"
            );
        }
        assert!(canonicalize(&[b'"', 0xff, b'"'], &[]).is_err(), "accepted invalid UTF-8");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(canonicalize(deep.as_bytes(), &[]).is_err());
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert!(canonicalize(ok.as_bytes(), &[]).is_ok());
    }

    #[test]
    fn ignored_fields_are_removed_before_hashing() {
        let with_time = r#"{"amount":100,"timestamp":"2026-01-01T00:00:00Z","meta":{"trace":"x","keep":1}}"#;
        assert_eq!(canon_ignoring(with_time, &["/timestamp", "/meta/trace"]), r#"{"amount":100,"meta":{"keep":1}}"#);
        // Missing paths are not an error: the volatile field may be optional.
        assert_eq!(canon_ignoring(r#"{"a":1}"#, &["/timestamp", "/x/y/z"]), r#"{"a":1}"#);
        // Escaped tokens and array indexes.
        assert_eq!(canon_ignoring(r#"{"a/b":1,"m~n":2,"c":3}"#, &["/a~1b", "/m~0n"]), r#"{"c":3}"#);
        assert_eq!(
            canon_ignoring(r#"{"items":[{"id":1,"at":5},{"id":2,"at":6}]}"#, &["/items/1/at"]),
            r#"{"items":[{"at":5,"id":1},{"id":2}]}"#
        );
        assert_eq!(canon_ignoring(r#"[0,1,2]"#, &["/01", "/3", "/-"]), "[0,1,2]");
        assert_eq!(canon_ignoring(r#"[0,1,2]"#, &["/0"]), "[1,2]");
    }

    #[test]
    fn malformed_pointers_are_rejected() {
        for pointer in ["", "timestamp", "/a~2", "/a~"] {
            let result = canonicalize(b"{}", &[pointer.to_string()]);
            assert!(matches!(result, Err(CanonicalJsonError::BadPointer { .. })), "accepted {pointer:?}");
        }
    }

    #[test]
    fn members_are_each_canonical_and_make_up_the_whole() {
        let data = br#"{ "b": [1.0, {"y":2,"x":1}], "a": "\u0041", "ts": 9 }"#;
        let ignore = vec!["/ts".to_owned()];
        let canonical = canonicalize_members(data, &ignore).expect("valid");
        assert_eq!(canonical.bytes, canonicalize(data, &ignore).expect("valid"));
        let members = canonical.members.expect("an object");
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(members[1].1, br#"[1,{"x":1,"y":2}]"#);
        assert_eq!(canonicalize_members(b"[1]", &[]).expect("valid").members, None);
    }
}
