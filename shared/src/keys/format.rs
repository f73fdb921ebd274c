//! Shape checks for provider keys, so an obviously wrong key is refused (400) before
//! anything is stored or sent, and the display hint (`sk-...cdef`) kept in clear.
//! Checks are strict only where the provider documents a format; messages never quote
//! the key.

/// Accepted key lengths, for every provider.
pub const MIN_KEY_LEN: usize = 8;
pub const MAX_KEY_LEN: usize = 512;

/// Why a key was refused (safe to show: never contains the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFormatError(pub String);

/// Checks `key` against the rules every key follows and the documented format of the
/// provider `slug` (unknown providers get only the general rules).
pub fn check_key_format(slug: &str, key: &str) -> Result<(), KeyFormatError> {
    let refuse = |why: &str| Err(KeyFormatError(why.to_owned()));
    if key.is_empty() {
        return refuse("api_key is empty");
    }
    if key.chars().any(char::is_whitespace) {
        return refuse("api_key contains whitespace (copy the key without spaces or line breaks)");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("api_key may contain only printable ASCII characters");
    }
    if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
        return Err(KeyFormatError(format!(
            "api_key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} characters long"
        )));
    }
    let (prefix, exact_len): (&str, Option<usize>) = match slug {
        // Anthropic before OpenAI-style: both start with `sk-`.
        "anthropic" => ("sk-ant-", None),
        "openrouter" => ("sk-or-", None),
        "openai" => ("sk-", None),
        "google" | "gemini" => ("AIza", Some(39)),
        "groq" => ("gsk_", None),
        "fireworks" => ("fw_", None),
        _ => ("", None),
    };
    if !key.starts_with(prefix) {
        return Err(KeyFormatError(format!(
            "this does not look like a {slug} key (expected it to start with `{prefix}`)"
        )));
    }
    if let Some(len) = exact_len
        && key.len() != len
    {
        return Err(KeyFormatError(format!(
            "this does not look like a {slug} key (expected {len} characters)"
        )));
    }
    Ok(())
}

/// The parts of a key kept in clear for display: a short prefix and the last four
/// characters, fewer for short keys, so the hint never reveals most of a key.
pub fn hint_parts(key: &str) -> (String, String) {
    let chars: Vec<char> = key.chars().collect();
    let prefix = if chars.len() >= 20 {
        // Up to four characters, cut after a separator (`sk-`, `fw_`, `gsk_`, `AIza`).
        let mut prefix = String::new();
        for c in chars.iter().take(4) {
            prefix.push(*c);
            if matches!(c, '-' | '_') {
                break;
            }
        }
        prefix
    } else {
        String::new()
    };
    let suffix = if chars.len() >= 12 {
        chars[chars.len() - 4..].iter().collect()
    } else {
        String::new()
    };
    (prefix, suffix)
}

/// `sk-...cdef` from the stored parts.
pub fn key_hint(prefix: &str, suffix: &str) -> String {
    format!("{prefix}...{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_formats_are_enforced() {
        assert!(check_key_format("openai", "sk-proj-abcdefghijklmnop").is_ok());
        assert!(check_key_format("openai", "pk-abcdefghijklmnop").is_err());
        assert!(check_key_format("anthropic", "sk-ant-api03-abcdefghij").is_ok());
        assert!(check_key_format("anthropic", "sk-abcdefghijklmnop").is_err());
        let google = format!("AIza{}", "x".repeat(35));
        assert!(check_key_format("google", &google).is_ok());
        assert!(check_key_format("google", &format!("{google}x")).is_err());
        assert!(check_key_format("google", &format!("AIzb{}", "x".repeat(35))).is_err());
        assert!(check_key_format("groq", "gsk_abcdefghijkl").is_ok());
        assert!(check_key_format("groq", "sk-abcdefghijkl").is_err());
        assert!(check_key_format("openrouter", "sk-or-v1-abcdef").is_ok());
        assert!(check_key_format("openrouter", "sk-abcdefghij").is_err());
        assert!(check_key_format("fireworks", "fw_abcdefghij").is_ok());
        assert!(check_key_format("fireworks", "abcdefghijkl").is_err());
        // Lenient where the format is not documented.
        assert!(check_key_format("together", "0123456789abcdef").is_ok());
    }

    #[test]
    fn general_rules_apply_to_every_provider() {
        for bad in [
            "",
            "short",
            "sk-has space-1234",
            "sk-newline\n1234",
            "sk-tab\t12345678",
            "sk-ünïcödé-12345",
            "sk-\u{7f}control12",
        ] {
            assert!(check_key_format("together", bad).is_err(), "{bad:?}");
        }
        assert!(check_key_format("together", &"a".repeat(513)).is_err());
        assert!(check_key_format("together", &"a".repeat(512)).is_ok());
        assert!(check_key_format("together", "abcdefgh").is_ok());
    }

    #[test]
    fn errors_never_quote_the_key() {
        let key = "pk-supersecretvalue123";
        let err = check_key_format("openai", key).unwrap_err();
        assert!(!err.to_string().contains("supersecret"));
    }

    #[test]
    fn hints_reveal_little() {
        assert_eq!(
            hint_parts("sk-proj-0123456789abcdef"),
            ("sk-".into(), "cdef".into())
        );
        assert_eq!(
            hint_parts(&format!("AIza{}wxyz", "0".repeat(31))),
            ("AIza".into(), "wxyz".into())
        );
        assert_eq!(
            hint_parts("gsk_0123456789abcdefgh"),
            ("gsk_".into(), "efgh".into())
        );
        assert_eq!(hint_parts("abcdefghijklmn"), ("".into(), "klmn".into()));
        assert_eq!(hint_parts("abcdefgh"), ("".into(), "".into()));
        assert_eq!(key_hint("sk-", "cdef"), "sk-...cdef");
    }
}
