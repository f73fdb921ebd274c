//! Reading and checking admin input: money as exact decimals from JSON strings or numbers,
//! PATCH fields that distinguish "absent" from `null`, and the format rules (slugs, user
//! ids, names, bounds) shared by the admin entities.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

use super::AdminError;

/// Money and prices keep at most this many decimal places (`numeric(…, 9)` columns).
pub const MONEY_SCALE: u32 = 9;
/// A JSON number with more significant digits than this may have been rounded by the JSON
/// parser (binary floating point keeps 15 decimal digits exactly): it must be sent as a string.
const MAX_EXACT_NUMBER_DIGITS: usize = 15;

/// Parses a decimal from its text (`"2.50"`, `"-1"`, `"1e-7"`), exactly.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let text = text.trim();
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str(text)
    };
    parsed.map_err(|_| format!("`{}` is not a decimal number", truncate(text, 40)))
}

struct DecimalVisitor;

impl<'de> Visitor<'de> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal amount as a string (\"2.50\") or a JSON number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
        parse_decimal(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Decimal, E> {
        Decimal::try_from_i128_with_scale(v, 0).map_err(|_| E::custom("number out of range"))
    }

    /// A JSON number with a fraction arrives as `f64` (serde_json without
    /// `arbitrary_precision`). Its shortest round-trip text (`serde_json::Number`'s
    /// `Display`) is the decimal the client wrote as long as it has at most 15 significant
    /// digits; longer ones are refused rather than silently rounded.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
        let number = serde_json::Number::from_f64(v)
            .ok_or_else(|| E::custom("amount must be a finite number"))?;
        let text = number.to_string();
        if significant_digits(&text) > MAX_EXACT_NUMBER_DIGITS {
            return Err(E::custom(format!(
                "{text} has more than {MAX_EXACT_NUMBER_DIGITS} significant digits; send it as a string to keep it exact"
            )));
        }
        parse_decimal(&text).map_err(E::custom)
    }
}

/// Significant digits of a number's text (`0.000120` → 2, `1.5e-7` → 2, `120` → 3).
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0');
    if mantissa.contains('.') {
        digits.len()
    } else {
        digits.trim_end_matches('0').len().max(1)
    }
}

/// `#[serde(deserialize_with = "money")]`: a required decimal from a string or a number.
pub fn money<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    deserializer.deserialize_any(DecimalVisitor)
}

/// `#[serde(default, deserialize_with = "money_opt")]`: an optional decimal (`null` or absent → `None`).
pub fn money_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Decimal>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Decimal>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a decimal amount or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            money(d).map(Some)
        }
    }
    deserializer.deserialize_option(OptVisitor)
}

/// `#[serde(default, deserialize_with = "money_present")]` for a PATCH money field that
/// cannot be `null`: absent → `None`, a value → `Some(v)`, `null` → an error.
pub fn money_present<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    money(deserializer).map(Some)
}

/// `#[serde(default, deserialize_with = "money_patch")]` for a nullable money field of a
/// PATCH: absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn money_patch<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Decimal>>, D::Error> {
    money_opt(deserializer).map(Some)
}

/// `#[serde(default, deserialize_with = "nullable")]` for a nullable PATCH field: absent →
/// `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `#[serde(default, deserialize_with = "present")]` for a PATCH field that cannot be
/// `null`: absent → `None`, a value → `Some(v)`, `null` → an error.
pub fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Money and prices as sent: no exponent, trailing zeros trimmed but at least two decimals
/// (`"10.00"`, `"2.50"`, `"0.0005"`).
pub fn money_text(value: &Decimal) -> String {
    let normalized = value.normalize();
    if normalized.scale() < 2 {
        let mut padded = normalized;
        padded.rescale(2);
        padded.to_string()
    } else {
        normalized.to_string()
    }
}

/// `#[serde(serialize_with = "serialize_money")]`.
pub fn serialize_money<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&money_text(value))
}

/// `#[serde(serialize_with = "serialize_money_opt")]`.
pub fn serialize_money_opt<S: Serializer>(
    value: &Option<Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_str(&money_text(value)),
        None => serializer.serialize_none(),
    }
}

/// Checks a money amount or price: at most 9 decimal places, below `10^integer_digits`
/// in magnitude, and not negative unless allowed.
pub fn check_money(
    param: &str,
    value: Decimal,
    integer_digits: u32,
    allow_negative: bool,
) -> Result<Decimal, AdminError> {
    let value = value.normalize();
    if value.scale() > MONEY_SCALE {
        return Err(AdminError::invalid(
            param,
            format!("{param} has more than {MONEY_SCALE} decimal places"),
        ));
    }
    if !allow_negative && value.is_sign_negative() && !value.is_zero() {
        return Err(AdminError::invalid(param, format!("{param} must be >= 0")));
    }
    let limit = Decimal::from(10u64.pow(integer_digits));
    if value.abs() >= limit {
        return Err(AdminError::invalid(
            param,
            format!("{param} must be below {limit}"),
        ));
    }
    Ok(value)
}

/// Prices are `numeric(18, 9)`: 9 integer digits.
pub fn check_price(param: &str, value: Decimal) -> Result<Decimal, AdminError> {
    check_money(param, value, 9, false)
}

/// `^[a-z0-9][a-z0-9_-]{0,62}$` (the schema's rule for provider slugs).
pub fn check_slug(param: &str, value: &str) -> Result<(), AdminError> {
    let bytes = value.as_bytes();
    let ok = (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            param,
            format!(
                "{param} must be 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
            ),
        ))
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$` (the schema's rule for user ids).
pub fn check_user_id(param: &str, value: &str) -> Result<(), AdminError> {
    let bytes = value.as_bytes();
    let ok = (1..=128).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::invalid(
            param,
            format!(
                "{param} must be 1-128 characters of letters, digits, '.', '_', '@', ':' and '-', starting with a letter or digit"
            ),
        ))
    }
}

/// Free text (names): `min..=max` characters, no control characters.
pub fn check_text(param: &str, value: &str, min: usize, max: usize) -> Result<(), AdminError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(AdminError::invalid(
            param,
            format!("{param} must have {min} to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            param,
            format!("{param} must not contain control characters"),
        ));
    }
    Ok(())
}

/// An optional integer that must be > 0 when present.
pub fn check_positive(param: &str, value: Option<i32>) -> Result<(), AdminError> {
    match value {
        Some(v) if v <= 0 => Err(AdminError::invalid(param, format!("{param} must be > 0"))),
        _ => Ok(()),
    }
}

/// An optional integer that must be >= 0 when present.
pub fn check_non_negative(param: &str, value: Option<i32>) -> Result<(), AdminError> {
    match value {
        Some(v) if v < 0 => Err(AdminError::invalid(param, format!("{param} must be >= 0"))),
        _ => Ok(()),
    }
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "money")]
        amount: Decimal,
        #[serde(default, deserialize_with = "money_patch")]
        cap: Option<Option<Decimal>>,
    }

    fn amount(value: serde_json::Value) -> Result<Decimal, String> {
        serde_json::from_value::<Body>(json!({ "amount": value }))
            .map(|b| b.amount)
            .map_err(|e| e.to_string())
    }

    fn amount_from_text(json_text: &str) -> Result<Decimal, String> {
        serde_json::from_str::<Body>(&format!("{{\"amount\": {json_text}}}"))
            .map(|b| b.amount)
            .map_err(|e| e.to_string())
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn money_from_strings_is_exact() {
        assert_eq!(amount(json!("0.1")).unwrap(), d("0.1"));
        assert_eq!(amount(json!("2.50")).unwrap(), d("2.50"));
        assert_eq!(amount(json!("-3.000000001")).unwrap(), d("-3.000000001"));
        assert_eq!(
            amount(json!("12345678901234.123456789")).unwrap(),
            d("12345678901234.123456789")
        );
        assert!(amount(json!("abc")).is_err());
        assert!(amount(json!("")).is_err());
        assert!(amount(json!(true)).is_err());
        assert!(amount(json!(null)).is_err());
    }

    #[test]
    fn money_from_json_numbers_keeps_what_was_written() {
        // Parsed from JSON text, as a request body is.
        assert_eq!(amount_from_text("0.1").unwrap(), d("0.1"));
        assert_eq!(amount_from_text("2.50").unwrap(), d("2.5"));
        assert_eq!(amount_from_text("0.3").unwrap(), d("0.3"));
        assert_eq!(amount_from_text("10").unwrap(), d("10"));
        assert_eq!(amount_from_text("-5").unwrap(), d("-5"));
        assert_eq!(amount_from_text("0.000500").unwrap(), d("0.0005"));
        assert_eq!(amount_from_text("1e-7").unwrap(), d("0.0000001"));
        assert_eq!(amount_from_text("1.5E2").unwrap(), d("150"));
        assert_eq!(
            amount_from_text("123456.789012345").unwrap(),
            d("123456.789012345")
        );
        assert_eq!(
            amount_from_text("0.1").unwrap() + amount_from_text("0.2").unwrap(),
            d("0.3")
        );
        // Too many digits for a binary float: refused, not rounded.
        let err = amount_from_text("0.12345678901234567").unwrap_err();
        assert!(err.contains("as a string"), "{err}");
        assert!(amount_from_text("1e400").is_err());
    }

    #[test]
    fn patch_money_distinguishes_null_from_absent() {
        let b: Body = serde_json::from_value(json!({"amount": 1})).unwrap();
        assert_eq!(b.cap, None);
        let b: Body = serde_json::from_value(json!({"amount": 1, "cap": null})).unwrap();
        assert_eq!(b.cap, Some(None));
        let b: Body = serde_json::from_str(r#"{"amount": 1, "cap": 2.50}"#).unwrap();
        assert_eq!(b.cap, Some(Some(d("2.5"))));
    }

    #[test]
    fn money_is_printed_plainly() {
        assert_eq!(money_text(&d("10")), "10.00");
        assert_eq!(money_text(&d("2.500000000")), "2.50");
        assert_eq!(money_text(&d("0.000500000")), "0.0005");
        assert_eq!(money_text(&d("-1.5")), "-1.50");
        assert_eq!(money_text(&d("0")), "0.00");
    }

    #[test]
    fn money_checks() {
        assert!(check_price("p", d("0")).is_ok());
        assert!(check_price("p", d("-0.01")).is_err());
        assert!(check_price("p", d("999999999.999999999")).is_ok());
        assert!(check_price("p", d("1000000000")).is_err());
        assert!(check_price("p", d("0.0000000001")).is_err());
        assert!(check_price("p", d("2.500000000000")).is_ok());
        assert!(check_money("a", d("-5"), 11, true).is_ok());
    }

    #[test]
    fn format_rules() {
        assert!(check_slug("s", "openai").is_ok());
        assert!(check_slug("s", "my-provider_2").is_ok());
        assert!(check_slug("s", "OpenAI").is_err());
        assert!(check_slug("s", "-x").is_err());
        assert!(check_slug("s", "").is_err());
        assert!(check_slug("s", &"a".repeat(64)).is_err());
        assert!(check_user_id("id", "alice@example.com").is_ok());
        assert!(check_user_id("id", "user:42").is_ok());
        assert!(check_user_id("id", "has space").is_err());
        assert!(check_user_id("id", ".x").is_err());
        assert!(check_text("n", "Open AI", 1, 200).is_ok());
        assert!(check_text("n", "", 1, 200).is_err());
        assert!(check_text("n", "a\nb", 1, 200).is_err());
        assert!(significant_digits("0.000120") == 3);
        assert!(significant_digits("120") == 2);
        assert!(significant_digits("1.5e-7") == 2);
    }
}
