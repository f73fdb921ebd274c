//! The `migrate` Lambda function: the deploy-time migration step. In AWS the Lambda
//! functions never migrate on a cold start; this one runs on every deploy as the
//! CloudFormation custom resource `MigrateOnDeploy` (infra/template.yaml), and can be
//! invoked by hand with any other event (`{}`).
//!
//! One run applies pending migrations (the same runner as `switchboard migrate`) and makes
//! sure the bootstrap admin key from `SWITCHBOARD_ADMIN_KEY` or
//! `SWITCHBOARD_ADMIN_KEY_SECRET_ARN` exists (an empty secret gets a generated key). With
//! neither configured, no admin key is generated: nobody could ever read it.
//!
//! As a custom resource it always answers CloudFormation (the pre-signed `ResponseURL`):
//! `Create` and `Update` run the step, `Delete` succeeds without touching the database,
//! and a failure is reported as `FAILED` with the reason, so the stack rolls back instead
//! of waiting for a timeout.
//!
//! An `Update` whose `FunctionVersion` goes down (the new properties name an older
//! published version of this function than the old ones) is CloudFormation rolling the
//! stack back: it is answered `SUCCESS` without migrating. Migrating then would run the
//! very migration that failed again, fail again, and leave the stack in
//! `UPDATE_ROLLBACK_FAILED`. Migrations only go forward: a rollback keeps the schema as
//! the last successful step left it (each migration is its own transaction, so a failed
//! one left nothing behind).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchboard_core::auth::bootstrap::{AdminKeyError, bootstrap_admin_key};
use switchboard_core::config::Config;
use switchboard_core::credentials::SecretsError;
use switchboard_core::credentials::{self, AwsContext};
use switchboard_core::db::{DbError, connect_pool_with, migrate};
use switchboard_core::report::error_chain;

/// CloudFormation caps the whole response body at 4 KiB; the reason gets part of it.
const MAX_REASON_CHARS: usize = 1500;
/// Kept free before the Lambda deadline to answer CloudFormation even when the step hangs.
const RESPONSE_MARGIN: Duration = Duration::from_secs(15);
const PHYSICAL_RESOURCE_ID: &str = "switchboard-schema";
/// First connection: tries and the pause between them (about two minutes in all).
const CONNECT_ATTEMPTS: u32 = 12;
const CONNECT_RETRY_DELAY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "no database configured: set DATABASE_URL or DATABASE_SECRET_ARN (the migrate function never starts an embedded cluster)"
    )]
    NoDatabase,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    #[error(transparent)]
    AdminKey(#[from] AdminKeyError),
    #[error("the migration step did not finish within {0:?}")]
    Timeout(Duration),
    #[error("cannot answer CloudFormation: {0}")]
    Respond(String),
}

/// What one run did; never contains a key.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MigrateSummary {
    /// Migration versions applied by this run.
    pub applied: Vec<i32>,
    /// How many were already applied.
    pub already_applied: usize,
    /// What happened to the bootstrap admin key (`inserted`, `present`,
    /// `generated_into_secret`, ..., or `not_configured`).
    pub admin_key: &'static str,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CustomResourceRequest {
    request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_resource_id: String,
    #[serde(default)]
    physical_resource_id: Option<String>,
    #[serde(default)]
    resource_properties: Value,
    #[serde(default)]
    old_resource_properties: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
enum RequestType {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CustomResourceResponse<'a> {
    status: &'static str,
    reason: String,
    physical_resource_id: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
    no_echo: bool,
    data: Value,
}

/// The migration step with what it needs, built once per process.
pub struct MigrateStep {
    config: Config,
    aws: AwsContext,
    http: reqwest::Client,
    connect_attempts: u32,
    connect_retry_delay: Duration,
}

impl MigrateStep {
    pub fn new(config: Config) -> Self {
        Self::with_aws(config, AwsContext::default())
    }

    /// With an AWS context of the caller's (tests: an emulator).
    pub fn with_aws(config: Config, aws: AwsContext) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            config,
            aws,
            http,
            connect_attempts: CONNECT_ATTEMPTS,
            connect_retry_delay: CONNECT_RETRY_DELAY,
        }
    }

    /// How often, and how far apart, the first database connection is tried.
    pub fn with_connect_retry(mut self, attempts: u32, delay: Duration) -> Self {
        self.connect_attempts = attempts.max(1);
        self.connect_retry_delay = delay;
        self
    }

    pub fn in_lambda(&self) -> bool {
        self.config.server.in_lambda
    }

    /// Applies pending migrations, then the bootstrap admin key.
    pub async fn run(&self) -> Result<MigrateSummary, MigrateError> {
        let url = credentials::database_url(&self.config, &self.aws)
            .await?
            .ok_or(MigrateError::NoDatabase)?;
        let pool = connect_pool_with(&url, 1, &self.config.database.tls)?;
        // A new stack's RDS Proxy may take a little while to accept connections: retry the
        // first connection (the custom resource's deadline still bounds the whole step).
        let mut attempt = 1;
        let mut client = loop {
            match pool.get().await {
                Ok(client) => break client,
                Err(error) if attempt < self.connect_attempts => {
                    tracing::warn!(attempt, error = %error, "database not reachable yet; retrying");
                    attempt += 1;
                    tokio::time::sleep(self.connect_retry_delay).await;
                }
                Err(error) => return Err(DbError::from(error).into()),
            }
        };
        let report = migrate::run(&mut client).await?;
        let admin_key = if self.config.keys.admin_key.is_none()
            && self.config.keys.admin_key_secret_arn.is_none()
        {
            "not_configured"
        } else {
            bootstrap_admin_key(&mut client, &self.config, &self.aws)
                .await?
                .as_str()
        };
        let summary = MigrateSummary {
            applied: report.applied,
            already_applied: report.already_applied.len(),
            admin_key,
        };
        tracing::info!(applied = ?summary.applied, already_applied = summary.already_applied, admin_key, "migration step done");
        Ok(summary)
    }

    /// One invocation. `time_left` is what remains before the Lambda deadline.
    pub async fn handle(
        &self,
        event: Value,
        time_left: Option<Duration>,
    ) -> Result<Value, MigrateError> {
        let Ok(request) = serde_json::from_value::<CustomResourceRequest>(event) else {
            // Invoked directly: run and answer the summary (errors fail the invocation).
            return Ok(serde_json::to_value(self.run().await?).unwrap_or(Value::Null));
        };
        tracing::info!(request_type = ?request.request_type, stack = %request.stack_id, "CloudFormation custom resource request");
        let rollback = request.request_type == RequestType::Update
            && request
                .old_resource_properties
                .as_ref()
                .is_some_and(|old| is_rollback(&request.resource_properties, old));
        let outcome = match request.request_type {
            RequestType::Delete => Ok(Outcome::Delete),
            RequestType::Update if rollback => Ok(Outcome::Rollback),
            RequestType::Create | RequestType::Update => {
                let budget = time_left.map(|left| left.saturating_sub(RESPONSE_MARGIN));
                match budget {
                    Some(budget) => match tokio::time::timeout(budget, self.run()).await {
                        Ok(result) => result.map(Outcome::Ran),
                        Err(_) => Err(MigrateError::Timeout(budget)),
                    },
                    None => self.run().await.map(Outcome::Ran),
                }
            }
        };
        let physical_id = request
            .physical_resource_id
            .as_deref()
            .unwrap_or(PHYSICAL_RESOURCE_ID);
        let (status, reason, data) = match &outcome {
            Ok(Outcome::Ran(summary)) => (
                "SUCCESS",
                format!(
                    "migrations applied: {:?}; already applied: {}; admin key: {}",
                    summary.applied, summary.already_applied, summary.admin_key
                ),
                json!({
                    "Applied": summary.applied.len().to_string(),
                    "AdminKey": summary.admin_key,
                }),
            ),
            Ok(Outcome::Delete) => (
                "SUCCESS",
                "delete: the database is left as it is".to_owned(),
                json!({}),
            ),
            Ok(Outcome::Rollback) => {
                tracing::warn!("rollback update (FunctionVersion went down): not migrating");
                (
                    "SUCCESS",
                    "rollback: the function version went down; migrations only go forward, nothing run".to_owned(),
                    json!({"Applied": "0", "Rollback": "true"}),
                )
            }
            Err(error) => {
                tracing::error!(error = %error_chain(error), "migration step failed");
                ("FAILED", error_chain(error), json!({}))
            }
        };
        let response = CustomResourceResponse {
            status,
            reason: truncate(&reason, MAX_REASON_CHARS),
            physical_resource_id: physical_id,
            stack_id: &request.stack_id,
            request_id: &request.request_id,
            logical_resource_id: &request.logical_resource_id,
            no_echo: false,
            data,
        };
        self.respond(&request.response_url, &response).await?;
        Ok(json!({ "Status": status }))
    }

    /// PUTs the answer to the pre-signed URL: no content type (the URL is signed without
    /// one), a few tries.
    async fn respond(
        &self,
        url: &str,
        response: &CustomResourceResponse<'_>,
    ) -> Result<(), MigrateError> {
        let body =
            serde_json::to_vec(response).map_err(|e| MigrateError::Respond(e.to_string()))?;
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            match self.http.put(url).body(body.clone()).send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => last = format!("the response URL answered {}", answer.status()),
                // Without the URL: it is a pre-signed credential.
                Err(error) => last = error.without_url().to_string(),
            }
        }
        Err(MigrateError::Respond(last))
    }
}

/// What one custom resource request came to, short of a failure.
enum Outcome {
    /// Create or a forward Update: the step ran.
    Ran(MigrateSummary),
    /// Delete: the data stays.
    Delete,
    /// An Update back to an older function version: nothing run.
    Rollback,
}

/// An Update is a rollback when `FunctionVersion` (a published version's ARN,
/// `arn:...:function:NAME:7`, or a bare number) names an older version of the same
/// function than before. A different function (replaced, renamed) or a value that is not a
/// version is never taken for a rollback: then the step runs as on any Update.
fn is_rollback(new: &Value, old: &Value) -> bool {
    fn version(properties: &Value) -> Option<(&str, u64)> {
        let text = properties.get("FunctionVersion")?.as_str()?;
        let (function, number) = text.rsplit_once(':').unwrap_or(("", text));
        Some((function, number.parse().ok()?))
    }
    match (version(new), version(old)) {
        (Some((new_fn, new_v)), Some((old_fn, old_v))) => new_fn == old_fn && new_v < old_v,
        _ => false,
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_resource_events_are_recognised() {
        let event = json!({
            "RequestType": "Create",
            "ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:sb-migrate",
            "ResponseURL": "https://cloudformation-custom-resource-response-useast1.s3.amazonaws.com/x",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/sb/1",
            "RequestId": "r-1",
            "LogicalResourceId": "MigrateOnDeploy",
            "ResourceType": "Custom::SwitchboardMigrations",
            "ResourceProperties": {"FunctionVersion": "3"}
        });
        let request: CustomResourceRequest = serde_json::from_value(event).unwrap();
        assert_eq!(request.request_type, RequestType::Create);
        assert!(request.physical_resource_id.is_none());
        // A direct invocation is not a custom resource request.
        assert!(serde_json::from_value::<CustomResourceRequest>(json!({})).is_err());
    }

    #[test]
    fn a_function_version_going_down_is_a_rollback() {
        let arn = |v: &str| json!({"FunctionVersion": format!("arn:aws:lambda:us-east-1:123456789012:function:sb-migrate:{v}")});
        assert!(is_rollback(&arn("3"), &arn("4")));
        assert!(is_rollback(&arn("9"), &arn("10")), "compared as numbers");
        assert!(!is_rollback(&arn("5"), &arn("4")));
        assert!(!is_rollback(&arn("4"), &arn("4")));
        assert!(is_rollback(
            &json!({"FunctionVersion": "2"}),
            &json!({"FunctionVersion": "3"})
        ));
        // Another function (replaced), or no version: not a rollback, the step runs.
        let other =
            json!({"FunctionVersion": "arn:aws:lambda:us-east-1:123456789012:function:sb-other:9"});
        assert!(!is_rollback(&arn("3"), &other));
        assert!(!is_rollback(&json!({}), &arn("4")));
        assert!(!is_rollback(
            &json!({"FunctionVersion": "$LATEST"}),
            &arn("4")
        ));
    }

    #[test]
    fn reasons_are_truncated_on_a_char_boundary() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééééé", 2), "éé...");
    }
}
