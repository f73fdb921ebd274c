//! The closed vocabularies of the catalog, matching the CHECK constraints of the schema.
//! Each parses from and prints as the lowercase string stored in the database and used on
//! the wire; an unknown value is an error that names the accepted ones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value outside a closed vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}` (expected one of: {expected})")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue {
                        kind: $kind,
                        value: other.chars().take(64).collect(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

vocabulary!(
    /// User tiers, ordered: `Free < Starter < Professional < Enterprise`.
    Tier, "tier", {
        Free => "free",
        Starter => "starter",
        Professional => "professional",
        Enterprise => "enterprise",
    }
);

vocabulary!(
    /// How much to spend on a request (routing.md's table).
    PowerLevel, "power level", {
        Eco => "eco",
        Balanced => "balanced",
        Precision => "precision",
    }
);

vocabulary!(
    TaskType, "task type", {
        Code => "code",
        Chat => "chat",
        Rag => "rag",
        Creative => "creative",
    }
);

vocabulary!(
    /// What a model does: chat routes (`/v1/chat/completions`, `/v1/messages`) pick only
    /// `chat` models, `/v1/embeddings` only `embedding` models.
    ModelType, "model type", {
        Chat => "chat",
        Embedding => "embedding",
    }
);

vocabulary!(
    /// The wire format a provider speaks.
    ApiFormat, "api format", {
        OpenAi => "openai",
        Anthropic => "anthropic",
        Gemini => "gemini",
        Bedrock => "bedrock",
    }
);

vocabulary!(
    /// How the provider key is sent (always a header, never the URL); `aws_sigv4`: no
    /// stored key, each request signed with the AWS credential chain (Bedrock).
    AuthType, "auth type", {
        Bearer => "bearer",
        XApiKey => "x-api-key",
        XGoogApiKey => "x-goog-api-key",
        None => "none",
        AwsSigv4 => "aws_sigv4",
    }
);

vocabulary!(
    HealthStatus, "health status", {
        Healthy => "healthy",
        Degraded => "degraded",
        Down => "down",
        Unknown => "unknown",
    }
);

// The vocabulary macro owns the derive list, so `#[derive(Default)]` is not available.
#[allow(clippy::derivable_impls)]
impl Default for PowerLevel {
    fn default() -> Self {
        PowerLevel::Balanced
    }
}

// The vocabulary macro owns the derive list, so `#[derive(Default)]` is not available.
#[allow(clippy::derivable_impls)]
impl Default for ModelType {
    fn default() -> Self {
        ModelType::Chat
    }
}

// The vocabulary macro owns the derive list, so `#[derive(Default)]` is not available.
#[allow(clippy::derivable_impls)]
impl Default for TaskType {
    fn default() -> Self {
        TaskType::Chat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered() {
        assert!(Tier::Free < Tier::Starter);
        assert!(Tier::Starter < Tier::Professional);
        assert!(Tier::Professional < Tier::Enterprise);
    }

    #[test]
    fn round_trip_and_unknown_values() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), *t);
        }
        for a in AuthType::ALL {
            assert_eq!(a.as_str().parse::<AuthType>().unwrap(), *a);
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::Value::String(a.as_str().into())
            );
        }
        let err = "turbo".parse::<PowerLevel>().unwrap_err();
        assert!(err.to_string().contains("eco balanced precision"), "{err}");
        assert!(serde_json::from_str::<TaskType>("\"poetry\"").is_err());
        assert_eq!(PowerLevel::default(), PowerLevel::Balanced);
        assert_eq!(TaskType::default(), TaskType::Chat);
    }
}
