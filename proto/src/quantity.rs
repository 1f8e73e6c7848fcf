//! Kubernetes resource quantities (`512Mi`, `1Gi`, `500m`, `1.5e3`), parsed by Kubernetes' own
//! grammar:
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! suffix          ::= binarySI | decimalExponent | decimalSI
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= n | u | m | "" | k | M | G | T | P | E
//! decimalExponent ::= "e" signedInteger | "E" signedInteger
//! signedNumber    ::= number | sign number
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! sign            ::= "+" | "-"
//! ```
//!
//! The sign belongs to the grammar, but every quantity opsmesh reads is a resource amount
//! (memory, CPU, GPUs, quota), which Kubernetes requires to be ≥ 0: the parser refuses a negative
//! value itself, so no caller can forget to. As in Kubernetes, surrounding spaces are not part of
//! a quantity. Memory is read in bytes ([`parse_bytes`]), CPU in cores ([`parse_quantity`]:
//! `500m` is 0.5).

use thiserror::Error;

/// Longer input is refused before it is looked at: no real quantity comes close.
const MAX_LEN: usize = 64;

const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// Why a string is not a resource quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("quantity {0:?} is longer than {MAX_LEN} characters")]
    TooLong(String),
    #[error("{0:?} is not a quantity like 512Mi, 1Gi, 500m or 2: it does not start with a number")]
    Number(String),
    #[error(
        "{text:?} has an unknown suffix {suffix:?} (Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent like e3)"
    )]
    Suffix { text: String, suffix: String },
    #[error("{0:?} is negative: resource quantities are never below 0")]
    Negative(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// `digits × 10^exp10 × 2^exp2`, exactly as written.
struct Parsed {
    digits: u128,
    exp10: i32,
    exp2: u32,
}

fn parse(text: &str) -> Result<Parsed, QuantityError> {
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    if text.len() > MAX_LEN {
        return Err(QuantityError::TooLong(text.to_owned()));
    }
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.len() + fraction.len() == 0 || fraction.contains('.') {
        return Err(QuantityError::Number(text.to_owned()));
    }
    let too_large = || QuantityError::TooLarge(text.to_owned());
    let mut digits: u128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(d - b'0')))
            .ok_or_else(too_large)?;
    }
    let mut exp10 = -(fraction.len() as i32);
    let mut exp2 = 0;
    if let Some((_, bits)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        exp2 = *bits;
    } else if let Some((_, exp)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        exp10 += exp;
    } else if let Some(exponent) = suffix.strip_prefix(['e', 'E'])
        && let Some(unsigned) = exponent.strip_prefix(['+', '-']).or(Some(exponent))
        && !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
    {
        // Beyond ±9999 every value is 0 or infinite; the bound keeps the arithmetic in range.
        let exp: i32 = exponent
            .parse()
            .ok()
            .filter(|e: &i32| e.abs() <= 9999)
            .ok_or_else(too_large)?;
        exp10 += exp;
    } else {
        return Err(QuantityError::Suffix {
            text: text.to_owned(),
            suffix: suffix.to_owned(),
        });
    }
    if negative && digits != 0 {
        return Err(QuantityError::Negative(text.to_owned()));
    }
    Ok(Parsed {
        digits,
        exp10,
        exp2,
    })
}

/// A quantity's value (`64Mi` → 67108864, `500m` → 0.5, `2` → 2): CPU in cores, GPUs in devices.
pub fn parse_quantity(text: &str) -> Result<f64, QuantityError> {
    let p = parse(text)?;
    // Rust's float parsing rounds correctly, so `500m` is exactly 0.5.
    let decimal: f64 = format!("{}e{}", p.digits, p.exp10)
        .parse()
        .map_err(|_| QuantityError::TooLarge(text.to_owned()))?;
    let value = decimal * 2f64.powi(p.exp2 as i32);
    if value.is_finite() {
        Ok(value)
    } else {
        Err(QuantityError::TooLarge(text.to_owned()))
    }
}

/// A memory quantity in whole bytes, computed exactly; a fraction of a byte rounds up, as
/// Kubernetes' `Quantity.Value()` does (`100m` → 1).
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    let p = parse(text)?;
    let too_large = || QuantityError::TooLarge(text.to_owned());
    if p.digits == 0 {
        return Ok(0);
    }
    let scaled = p
        .digits
        .checked_shl(p.exp2)
        .filter(|n| n >> p.exp2 == p.digits);
    let scaled = scaled.ok_or_else(too_large)?;
    let bytes = if p.exp10 >= 0 {
        10u128
            .checked_pow(p.exp10 as u32)
            .and_then(|f| scaled.checked_mul(f))
            .ok_or_else(too_large)?
    } else {
        // A divisor beyond u128 exceeds `scaled`, so the quotient is a fraction: one byte.
        10u128
            .checked_pow(p.exp10.unsigned_abs())
            .map_or(1, |d| scaled.div_ceil(d))
    };
    u64::try_from(bytes).map_err(|_| too_large())
}

/// A JSON quantity field's value: numbers as they are, strings by the grammar.
pub fn json_quantity(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => parse_quantity(s).ok(),
        _ => None,
    }
}

/// Bytes in the shortest exact binary form (`480Mi`, `1Gi`, `1000`).
pub fn format_bytes(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    BINARY
        .iter()
        .rev()
        .find(|(_, bits)| bytes.trailing_zeros() >= *bits)
        .map_or_else(
            || bytes.to_string(),
            |(unit, bits)| format!("{}{unit}", bytes >> bits),
        )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn suffixes_and_numbers() {
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("0.5Ki"), Ok(512));
        assert_eq!(parse_bytes("512M"), Ok(512_000_000));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("2Ei"), Ok(2 << 60));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_quantity("500m"), Ok(0.5));
        assert_eq!(parse_quantity("250u"), Ok(0.00025));
        assert_eq!(parse_quantity("5n"), Ok(5e-9));
        assert_eq!(parse_quantity("2"), Ok(2.0));
        assert_eq!(parse_quantity("+2"), Ok(2.0));
        assert_eq!(parse_quantity(".5"), Ok(0.5));
        assert_eq!(parse_quantity("5."), Ok(5.0));
        assert_eq!(parse_quantity("3P"), Ok(3e15));
    }

    #[test]
    fn exponent_and_exa_are_told_apart() {
        // A bare `E` is exa; `E` followed by an integer is an exponent.
        assert_eq!(parse_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("1E3"), Ok(1000));
        assert_eq!(parse_bytes("1e3"), Ok(1000));
        assert_eq!(parse_bytes("1.5e+3"), Ok(1500));
        assert_eq!(parse_quantity("1e-3"), Ok(0.001));
        assert!(matches!(
            parse_quantity("1e"),
            Err(QuantityError::Suffix { .. })
        ));
        assert!(matches!(
            parse_quantity("1e1.5"),
            Err(QuantityError::Suffix { .. })
        ));
        assert!(matches!(
            parse_quantity("1e+"),
            Err(QuantityError::Suffix { .. })
        ));
    }

    #[test]
    fn fractions_of_a_byte_round_up() {
        assert_eq!(parse_bytes("100m"), Ok(1));
        assert_eq!(parse_bytes("1.0000001"), Ok(2));
        assert_eq!(parse_bytes("1e-9999"), Ok(1));
        assert_eq!(parse_bytes("0.000"), Ok(0));
    }

    #[test]
    fn negatives_are_refused_but_minus_zero_is_zero() {
        assert_eq!(
            parse_bytes("-1Gi"),
            Err(QuantityError::Negative("-1Gi".into()))
        );
        assert!(matches!(
            parse_quantity("-500m"),
            Err(QuantityError::Negative(_))
        ));
        assert_eq!(parse_quantity("-0"), Ok(0.0));
    }

    #[test]
    fn malformed_quantities_say_what_is_wrong() {
        assert_eq!(parse_quantity(""), Err(QuantityError::Empty));
        for bad in ["Mi", ".", "-", "1.2.3", "lots", " 1Gi", "..5"] {
            assert!(
                matches!(parse_quantity(bad), Err(QuantityError::Number(_))),
                "{bad:?}"
            );
        }
        for (bad, suffix) in [
            ("1Gi ", "Gi "),
            ("1 Gi", " Gi"),
            ("1KiB", "KiB"),
            ("1ki", "ki"),
            ("1K", "K"),
            ("1mi", "mi"),
        ] {
            assert_eq!(
                parse_quantity(bad),
                Err(QuantityError::Suffix {
                    text: bad.into(),
                    suffix: suffix.into()
                }),
            );
        }
        assert!(matches!(
            parse_quantity(&"1".repeat(65)),
            Err(QuantityError::TooLong(_))
        ));
        assert!(matches!(
            parse_quantity(&"9".repeat(40)),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_quantity("1e99999"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_quantity("1e400"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_bytes("16Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert_eq!(parse_quantity("16Ei"), Ok(16.0 * 2f64.powi(60)));
        let e = parse_quantity("1KiB").unwrap_err().to_string();
        assert!(e.contains("\"KiB\""), "{e}");
    }

    #[test]
    fn json_numbers_are_taken_as_they_are_and_strings_parsed() {
        assert_eq!(json_quantity(&serde_json::json!(3)), Some(3.0));
        assert_eq!(json_quantity(&serde_json::json!("64Mi")), Some(67108864.0));
        assert_eq!(json_quantity(&serde_json::json!("lots")), None);
        assert_eq!(json_quantity(&serde_json::json!(null)), None);
    }

    #[test]
    fn bytes_format_in_the_largest_exact_binary_unit() {
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(480 << 20), "480Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(3 << 29), "1536Mi");
        assert_eq!(format_bytes(15 << 60), "15Ei");
    }

    /// A quantity the grammar generates, with its value computed independently.
    fn grammar() -> impl Strategy<Value = (String, f64)> {
        let number = prop_oneof![
            "[0-9]{1,9}",
            "[0-9]{1,6}\\.[0-9]{1,6}",
            "[0-9]{1,6}\\.",
            "\\.[0-9]{1,6}",
        ];
        let suffix = prop_oneof![
            prop::sample::select(BINARY.to_vec())
                .prop_map(|(s, bits)| (s.to_owned(), 2f64.powi(bits as i32))),
            prop::sample::select(DECIMAL.to_vec())
                .prop_map(|(s, exp)| (s.to_owned(), 10f64.powi(exp))),
            ("[eE]", "[+-]?", 0i32..=20).prop_map(|(e, sign, exp)| {
                let value = if sign == "-" { -exp } else { exp };
                (format!("{e}{sign}{exp}"), 10f64.powi(value))
            }),
        ];
        ("\\+?", number, suffix).prop_map(|(sign, number, (suffix, factor))| {
            let value = number.parse::<f64>().unwrap() * factor;
            (format!("{sign}{number}{suffix}"), value)
        })
    }

    proptest! {
        #[test]
        fn a_formatted_byte_count_parses_back(bytes in any::<u64>()) {
            prop_assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
        }

        #[test]
        fn a_binary_multiple_parses_back(n in 0u64..1 << 20, unit in 0usize..4) {
            let (suffix, bits) = BINARY[unit];
            prop_assert_eq!(parse_bytes(&format!("{n}{suffix}")), Ok(n << bits));
        }

        #[test]
        fn what_the_grammar_generates_parses((text, value) in grammar()) {
            let parsed = parse_quantity(&text);
            prop_assert!(parsed.is_ok(), "{}: {:?}", text, parsed);
            let parsed = parsed.unwrap();
            let tolerance = value.abs() * 1e-12;
            prop_assert!((parsed - value).abs() <= tolerance, "{}: {} != {}", text, parsed, value);
            let negative = format!("-{}", text.trim_start_matches('+'));
            prop_assert_eq!(
                parse_quantity(&negative).is_err(),
                value != 0.0,
                "{}", negative
            );
        }
    }
}
