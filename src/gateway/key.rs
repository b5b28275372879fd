//! The `Idempotency-Key` request header: a Structured Field string (RFC 9651),
//! e.g. `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`.

use http::HeaderMap;

/// The header's name, as the IETF httpapi draft spells it.
pub const HEADER: &str = "Idempotency-Key";

/// The longest key DESIGN.md allows, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The key a request carries: `Ok(None)` when it carries none, `Err` saying
/// what is wrong with a malformed one. Parameters on the item are allowed by
/// the field's grammar and carry nothing the gateway uses, so they are ignored.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(format!("{HEADER} must be sent once"));
    }
    let item = sfv::Parser::new(value.as_bytes()).parse::<sfv::Item>().map_err(|e| {
        format!("{HEADER} must be a Structured Field string in double quotes, e.g. \"8e03978e-40d5\" ({e})")
    })?;
    let Some(key) = item.bare_item.as_string() else {
        return Err(format!("{HEADER} must be a Structured Field string in double quotes, e.g. \"8e03978e-40d5\""));
    };
    let key = key.as_str();
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("{HEADER} must be 1..{MAX_KEY_BYTES} characters (got {})", key.len()));
    }
    // The coordinator refuses a key of spaces only; it used to reach it, and a 500 came back.
    if key.trim().is_empty() {
        return Err(format!("{HEADER} must not be blank"));
    }
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(value: &str) -> Result<Option<String>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, value.parse().expect("a header value"));
        idempotency_key(&headers)
    }

    #[test]
    fn a_quoted_string_is_the_key() {
        assert_eq!(key_of("\"8e03978e-40d5\"").expect("valid"), Some("8e03978e-40d5".into()));
        assert_eq!(key_of("\"a \\\"quoted\\\" key\"").expect("valid"), Some("a \"quoted\" key".into()));
        assert_eq!(key_of("\"k\";origin=\"web\"").expect("parameters are allowed"), Some("k".into()));
        assert_eq!(idempotency_key(&HeaderMap::new()).expect("none is not an error"), None);
    }

    #[test]
    fn anything_else_is_refused_with_the_header_named() {
        for value in ["8e03978e-40d5", "abc", "42", "\"unterminated", "\"\"", "\"   \"", "?1", ":YWJj:"] {
            let error = key_of(value).expect_err(value);
            assert!(error.starts_with(HEADER), "{value}: {error}");
        }
        let long = format!("\"{}\"", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(key_of(&long).expect_err("too long").contains("1..255"));
    }

    #[test]
    fn a_repeated_header_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(HEADER, "\"a\"".parse().expect("value"));
        headers.append(HEADER, "\"b\"".parse().expect("value"));
        assert!(idempotency_key(&headers).expect_err("twice").contains("once"));
    }
}
