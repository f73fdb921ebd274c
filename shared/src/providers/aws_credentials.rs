//! The AWS credentials Bedrock calls are signed with: the standard chain of the AWS SDK
//! (environment variables — which is how Lambda hands its function role over —, shared
//! config, web identity, the container endpoint `AWS_CONTAINER_CREDENTIALS_FULL_URI` /
//! `_RELATIVE_URI`, EC2 IMDSv2), resolved on the first Bedrock call only and kept until
//! shortly before they expire. Nothing here prints a secret: `Debug` shows the access key
//! id alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use tokio::sync::{Mutex, OnceCell};

use crate::secret::Secret;

/// Credentials are renewed this long before they expire, so that a signature never
/// carries a token that runs out in flight.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials without an expiry (static environment variables) are read again this often.
const REREAD_UNEXPIRING: Duration = Duration::from_secs(15 * 60);
/// The region signatures use when the endpoint's host names none (a local endpoint) and
/// the environment sets neither `AWS_REGION` nor `AWS_DEFAULT_REGION`.
pub const DEFAULT_REGION: &str = "us-east-1";

/// One set of AWS credentials.
#[derive(Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    pub expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why no credentials could be had (the chain's own message, which never holds a secret).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no AWS credentials for Bedrock: {0}")]
pub struct AwsCredentialsError(pub String);

enum Source {
    /// Fixed credentials (tests, and a caller that resolved them itself).
    Fixed(AwsCredentials),
    /// The SDK's default chain, built on first use.
    Chain(OnceCell<Option<SharedCredentialsProvider>>),
}

struct Cached {
    credentials: AwsCredentials,
    /// When to ask the chain again.
    refresh_at: SystemTime,
}

/// Where Bedrock signatures get their credentials and default region. Cheap to clone (one
/// per process, shared).
#[derive(Clone)]
pub struct AwsCredentialSource {
    inner: Arc<SourceInner>,
}

struct SourceInner {
    source: Source,
    region: String,
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for AwsCredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.source {
            Source::Fixed(_) => "fixed",
            Source::Chain(_) => "default chain",
        };
        f.debug_struct("AwsCredentialSource")
            .field("source", &kind)
            .field("region", &self.inner.region)
            .finish()
    }
}

impl AwsCredentialSource {
    /// The SDK's default credential chain; the default region from `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`. Nothing is read before the first Bedrock call.
    pub fn default_chain() -> AwsCredentialSource {
        let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .filter_map(|name| std::env::var(name).ok())
            .map(|value| value.trim().to_owned())
            .find(|value| !value.is_empty())
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        AwsCredentialSource::new(Source::Chain(OnceCell::new()), region)
    }

    /// Always these credentials, and this default region.
    pub fn fixed(credentials: AwsCredentials, region: impl Into<String>) -> AwsCredentialSource {
        AwsCredentialSource::new(Source::Fixed(credentials), region.into())
    }

    fn new(source: Source, region: String) -> AwsCredentialSource {
        AwsCredentialSource {
            inner: Arc::new(SourceInner {
                source,
                region,
                cached: Mutex::new(None),
            }),
        }
    }

    /// The region to sign for when the endpoint's host does not name one.
    pub fn default_region(&self) -> &str {
        &self.inner.region
    }

    /// Current credentials: the cached ones while they are fresh, else the chain's (one
    /// caller asks the chain; the others wait for its answer).
    pub async fn credentials(&self) -> Result<AwsCredentials, AwsCredentialsError> {
        let chain = match &self.inner.source {
            Source::Fixed(credentials) => return Ok(credentials.clone()),
            Source::Chain(chain) => chain,
        };
        let mut cached = self.inner.cached.lock().await;
        let now = SystemTime::now();
        if let Some(entry) = cached.as_ref().filter(|entry| entry.refresh_at > now) {
            return Ok(entry.credentials.clone());
        }
        let provider = chain
            .get_or_init(|| async {
                aws_config::defaults(BehaviorVersion::latest())
                    .load()
                    .await
                    .credentials_provider()
            })
            .await
            .as_ref()
            .ok_or_else(|| AwsCredentialsError("no credential provider configured".into()))?;
        let resolved = provider
            .provide_credentials()
            .await
            .map_err(|error| AwsCredentialsError(crate::report::error_chain(&error)))?;
        let credentials = AwsCredentials {
            access_key_id: resolved.access_key_id().to_owned(),
            secret_access_key: Secret::new(resolved.secret_access_key()),
            session_token: resolved.session_token().map(Secret::new),
            expires_at: resolved.expiry(),
        };
        *cached = Some(Cached {
            refresh_at: refresh_at(credentials.expires_at, now),
            credentials: credentials.clone(),
        });
        Ok(credentials)
    }
}

/// When credentials obtained at `now` are to be renewed.
fn refresh_at(expires_at: Option<SystemTime>, now: SystemTime) -> SystemTime {
    match expires_at {
        Some(expiry) => expiry
            .checked_sub(REFRESH_BEFORE_EXPIRY)
            .filter(|at| *at > now)
            // Already within the margin: use them for this call, ask again next time.
            .unwrap_or(now),
        None => now + REREAD_UNEXPIRING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewed_before_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = now + Duration::from_secs(3600);
        assert_eq!(
            refresh_at(Some(hour), now),
            hour - REFRESH_BEFORE_EXPIRY,
            "an hour's role credentials are renewed 5 minutes early"
        );
        assert_eq!(refresh_at(Some(now + Duration::from_secs(60)), now), now);
        assert_eq!(refresh_at(None, now), now + REREAD_UNEXPIRING);
    }

    #[tokio::test]
    async fn debug_never_shows_a_secret() {
        let source = AwsCredentialSource::fixed(
            AwsCredentials {
                access_key_id: "AKIDTEST".into(),
                secret_access_key: Secret::new("very-secret-key"),
                session_token: Some(Secret::new("session-token-value")),
                expires_at: None,
            },
            "eu-west-1",
        );
        let credentials = source.credentials().await.unwrap();
        let shown = format!("{credentials:?} {source:?}");
        assert!(shown.contains("AKIDTEST"), "{shown}");
        assert!(!shown.contains("very-secret-key"), "{shown}");
        assert!(!shown.contains("session-token-value"), "{shown}");
        assert_eq!(source.default_region(), "eu-west-1");
    }
}
