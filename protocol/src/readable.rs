//! Whether a publisher's JSON can be read by the clients it goes to: valid JSON that common
//! parsers still refuse — too deeply nested, a lone UTF-16 surrogate, a number no double holds.
//!
//! RFC 8259 leaves these to each parser, and parsers differ: Ruby stops at 100 levels, serde_json
//! at 128, Python near 1,000; serde_json and Swift refuse `"\ud800"`; serde_json and Go refuse
//! `1e400`. A message no client can read is lost to its users, and a durable one comes back at
//! every reconnect, so the envelope refuses such `data` when it is published (RFC 7493, I-JSON,
//! asks the same of senders).

/// What makes valid JSON unreadable to some clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Arrays and objects nested deeper than the limit.
    TooDeep,
    /// A `\u` escape of half a surrogate pair with no other half, as written.
    LoneSurrogate(String),
    /// A number beyond the range of a 64-bit float, as written (at most 64 characters).
    NumberOutOfRange(String),
}

/// Checks valid JSON text in one pass over its bytes. `max_depth` counts arrays and objects:
/// a scalar is depth 0, `[1]` depth 1.
pub(crate) fn check(json: &str, max_depth: usize) -> Result<(), Unreadable> {
    let bytes = json.as_bytes();
    let (mut at, mut depth) = (0, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'"' => at = string_end(json, at + 1)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Unreadable::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let len = bytes[at..].iter().position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'));
                let number = &json[at..at + len.unwrap_or(bytes.len() - at)];
                if may_overflow(number) && number.parse::<f64>().is_ok_and(f64::is_infinite) {
                    return Err(Unreadable::NumberOutOfRange(number.chars().take(64).collect()));
                }
                at += number.len() - 1;
            }
            _ => {}
        }
        at += 1;
    }
    Ok(())
}

/// The index of the quote closing the string whose text starts at `at`, checking its `\u`
/// escapes pair their surrogates.
fn string_end(json: &str, mut at: usize) -> Result<usize, Unreadable> {
    let bytes = json.as_bytes();
    while let Some(skip) = bytes.get(at..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
        at += skip;
        match bytes.get(at + 1) {
            _ if bytes[at] == b'"' => return Ok(at),
            // Only `\uD800` – `\uDFFF` are halves of a pair; other escapes are skipped unread.
            Some(b'u') if matches!(bytes.get(at + 2), Some(b'd' | b'D')) => {
                let unit = code_unit(json, at);
                at += 6;
                match unit {
                    Some(0xD800..=0xDBFF) if matches!(code_unit(json, at), Some(0xDC00..=0xDFFF)) => at += 6,
                    Some(0xD800..=0xDFFF) => return Err(Unreadable::LoneSurrogate(json[at - 6..at].to_owned())),
                    _ => {}
                }
            }
            _ => at += 2,
        }
    }
    Ok(bytes.len())
}

/// Whether a number (valid JSON) could be beyond a double's range, cheaply, so that only those
/// are parsed: without an exponent it needs more than 308 characters; with one, a mantissa of at
/// most 8 characters (below 10^8) needs an exponent above 290.
fn may_overflow(number: &str) -> bool {
    match number.bytes().position(|b| b | 0x20 == b'e') {
        None => number.len() > 308,
        Some(e) => {
            let exponent = &number[e + 1..];
            e > 8 || exponent.len() > 4 || exponent.trim_start_matches('+').parse::<i16>().is_ok_and(|x| x > 290)
        }
    }
}

/// The UTF-16 code unit of a `\uXXXX` escape starting at `at`, if one does.
fn code_unit(json: &str, at: usize) -> Option<u16> {
    let escape = json.get(at..at + 6)?;
    escape.strip_prefix("\\u").and_then(|hex| u16::from_str_radix(hex, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(json: &str, max_depth: usize) -> Result<(), Unreadable> {
        serde_json::from_str::<&serde_json::value::RawValue>(json).expect("the tests use valid JSON");
        check(json, max_depth)
    }

    #[test]
    fn nesting_counts_arrays_and_objects_outside_strings() {
        for fits in ["1", r#""[[[[{{{{""#, "[[[1]]]", r#"[{"a":[]},{"b":{"c":"]]]"}}]"#, r#"[[["\"[[["]]]"#, "{}"] {
            assert_eq!(checked(fits, 3), Ok(()), "{fits}");
        }
        for deep in ["[[[[1]]]]", r#"{"a":{"b":{"c":{}}}}"#, r#"[1,[2,[3,{"d":[]}]]]"#, r#"[[["\\",[]]]]"#] {
            assert_eq!(checked(deep, 3), Err(Unreadable::TooDeep), "{deep}");
        }
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(checked(&nested(64), 64), Ok(()));
        assert_eq!(checked(&nested(65), 64), Err(Unreadable::TooDeep));
        assert_eq!(check(&nested(100_000), 64), Err(Unreadable::TooDeep));
    }

    #[test]
    fn surrogates_must_come_in_pairs() {
        for fine in [
            r#""\u4e2d\u6587 \uD7FF \ud83d\ude00""#,
            r#""\uD83D\uDE00 and \u00e9""#,
            r#""\\ud800""#,
            r#"["😀", "\u0041"]"#,
        ] {
            assert_eq!(checked(fine, 8), Ok(()), "{fine}");
            // What we let through, serde_json (one of the clients' parsers) reads.
            serde_json::from_str::<serde_json::Value>(fine).unwrap();
        }
        for (lone, shown) in [
            (r#""\ud800""#, r"\ud800"),
            (r#""x\uDC00y""#, r"\uDC00"),
            (r#"{"k":"\ud83d\u0041"}"#, r"\ud83d"),
            (r#"["\ud83d\ude00\ude00"]"#, r"\ude00"),
            (r#""\ud83d""#, r"\ud83d"),
        ] {
            assert_eq!(checked(lone, 8), Err(Unreadable::LoneSurrogate(shown.into())), "{lone}");
            assert!(serde_json::from_str::<serde_json::Value>(lone).is_err(), "serde_json refuses {lone} too");
        }
    }

    #[test]
    fn numbers_must_fit_a_double() {
        let fine = [
            "0",
            "-1.5e3",
            "1.7976931348623157e308",
            "123456789012345678901234567890",
            "1e-400",
            "1e-0400",
            "12345678e300",
            r#"{"a":[2E+10]}"#,
        ];
        for fine in fine {
            assert_eq!(checked(fine, 8), Ok(()), "{fine}");
            serde_json::from_str::<serde_json::Value>(fine).unwrap();
        }
        let long = format!("1{}", "0".repeat(400));
        for huge in ["1e400", "-1E+309", "[1, 2e999]", "1e0000400", "99999999e301", long.as_str()] {
            let err = checked(huge, 8).unwrap_err();
            assert!(
                matches!(err, Unreadable::NumberOutOfRange(ref n) if n.len() <= 64 && huge.contains(n.as_str())),
                "{huge}: {err:?}"
            );
            assert!(serde_json::from_str::<serde_json::Value>(huge).is_err(), "serde_json refuses {huge} too");
        }
    }
}
