//! Non-streamed chat completions: try candidates in order within the request deadline,
//! settle the ledger, answer with `_metadata`.

use std::time::Instant;

use axum::Json;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use switchboard_core::admission;
use switchboard_core::http::ApiError;
use switchboard_core::providers::{ProviderError, TimeoutPhase};

use crate::flow::{self, Prepared};

pub async fn complete(mut prepared: Prepared) -> Result<Response, ApiError> {
    let deadline = prepared.started + prepared.state.config.request_timeout;
    let candidates = prepared.candidates.clone();
    let mut last_error: Option<ProviderError> = None;
    let mut deadline_passed = false;

    for (index, candidate) in candidates.iter().enumerate() {
        if prepared
            .rate_limited_providers
            .contains(&candidate.provider.id)
        {
            continue;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            deadline_passed = true;
            break;
        }
        if index > 0 && !fallback_admitted(&prepared, candidate).await {
            continue;
        }
        let (target, user_key_id) = match flow::upstream_target(&prepared, candidate).await {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(error) => {
                flow::settle_failure(&prepared).await;
                return Err(error);
            }
        };
        let started = Instant::now();
        let result = tokio::time::timeout(
            remaining,
            prepared
                .state
                .providers
                .complete(&target, &prepared.request),
        )
        .await;
        drop(target);
        let latency = started.elapsed();
        match result {
            Ok(Ok(completion)) => {
                let settlement = flow::price(&prepared, candidate, &completion.usage);
                let balance = match flow::settle_success(
                    &mut prepared,
                    candidate,
                    user_key_id,
                    latency,
                    &settlement,
                )
                .await
                {
                    Ok(balance) => balance,
                    Err(error) => {
                        flow::settle_failure(&prepared).await;
                        return Err(error);
                    }
                };
                let mut response = completion.response;
                response.usage = Some(settlement.usage.to_openai());
                let mut body = serde_json::to_value(&response).map_err(ApiError::internal)?;
                body["_metadata"] = flow::metadata(&prepared, candidate, &settlement, balance);
                let mut answer = Json(body).into_response();
                provider_headers(&mut answer, candidate);
                return Ok(answer);
            }
            Ok(Err(error)) => {
                tracing::info!(upstream = %flow::describe(candidate), error = %error, "attempt failed");
                flow::record_failure(&mut prepared, candidate, user_key_id, latency, &error).await;
                if flow::is_final(&error) {
                    flow::settle_failure(&prepared).await;
                    return Err(error.into());
                }
                last_error = Some(error);
            }
            Err(_elapsed) => {
                let error = ProviderError::Timeout {
                    phase: TimeoutPhase::Attempt,
                };
                flow::record_failure(&mut prepared, candidate, user_key_id, latency, &error).await;
                deadline_passed = true;
                break;
            }
        }
    }
    flow::settle_failure(&prepared).await;
    Err(flow::exhausted_error(last_error, deadline_passed))
}

/// A fallback candidate takes a slot of its own provider's limits (one more round trip,
/// on the fallback path only). `false`: that provider is at its limit, skip it.
pub async fn fallback_admitted(
    prepared: &Prepared,
    candidate: &switchboard_core::routing::Candidate,
) -> bool {
    if candidate.provider.rate_limit_rpm.is_none() && candidate.provider.rate_limit_tpm.is_none() {
        return true;
    }
    let limit = admission::ProviderLimit {
        provider_id: candidate.provider.id,
        rpm: candidate.provider.rate_limit_rpm,
        tpm: candidate.provider.rate_limit_tpm,
        tokens: i64::from(prepared.prompt_tokens)
            + i64::from(candidate.output_token_limit(prepared.request.requested_output_tokens())),
    };
    match prepared.state.pool.get().await {
        Ok(client) => match admission::take_provider_slot(&**client, &limit).await {
            Ok(None) => true,
            Ok(Some(_)) => false,
            Err(error) => {
                tracing::warn!(%error, "could not check a fallback provider's rate limit");
                true
            }
        },
        Err(_) => true,
    }
}

pub fn provider_headers(response: &mut Response, candidate: &switchboard_core::routing::Candidate) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&candidate.provider.provider_slug) {
        headers.insert(HeaderName::from_static("x-switchboard-provider"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&candidate.model.model_id) {
        headers.insert(HeaderName::from_static("x-switchboard-model"), v);
    }
}
