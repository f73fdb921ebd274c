//! Stripe top-ups: a user starts a Checkout (`POST /v1/billing/checkout`), Stripe tells us
//! the payment went through (`POST /webhooks/stripe`, signed; no gateway key).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_core::auth::Caller;
use switchboard_core::billing::stripe::{self, CheckoutSession, StripeError};
use switchboard_core::http::{ApiError, AppJson};
use switchboard_core::state::AppState;
use utoipa::ToSchema;

use crate::openapi::ErrorBody;

/// `POST /v1/billing/checkout`.
#[derive(Deserialize, ToSchema)]
pub struct CheckoutRequest {
    /// USD, a decimal string (`"20.00"`) or a number; whole cents, within the configured
    /// range (default 5 to 1000).
    #[schema(value_type = String, example = "20.00")]
    pub amount_usd: Value,
}

fn amount(value: &Value) -> Result<Decimal, ApiError> {
    let parsed = match value {
        Value::String(s) => s.trim().parse::<Decimal>().ok(),
        Value::Number(n) => n.to_string().parse::<Decimal>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        ApiError::invalid_param("amount_usd", "amount_usd must be an amount of dollars")
    })
}

/// Start a Stripe Checkout for a top-up of the caller's account; open the answer's `url`.
/// The session is recorded for the caller; the credit arrives when Stripe reports the
/// payment (the webhook).
#[utoipa::path(post, path = "/v1/billing/checkout", tag = "billing",
    request_body = CheckoutRequest,
    responses((status = 201, description = "The Checkout Session", body = CheckoutSession),
        (status = 400, description = "Bad amount", body = ErrorBody),
        (status = 502, description = "Stripe refused or could not be reached", body = ErrorBody),
        (status = 503, description = "Stripe is not configured", body = ErrorBody)))]
pub async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<CheckoutRequest>,
) -> Result<(StatusCode, AppJson<CheckoutSession>), ApiError> {
    let amount = amount(&body.amount_usd)?;
    let session = stripe::create_checkout(
        &state.http,
        &state.pool,
        &state.config.billing,
        &caller.user_id,
        amount,
    )
    .await?;
    Ok((StatusCode::CREATED, AppJson(session)))
}

/// Stripe's webhook: a paid session this Switchboard created credits its account once
/// (`checkout.session.completed`, `checkout.session.async_payment_succeeded`); refunds
/// (`charge.refunded`) and disputes (`charge.dispute.*`) of those payments debit once, and a
/// won dispute gives back. Verified with `Stripe-Signature`; 400 for a missing, bad or stale
/// signature or a body that is not an event, 200 otherwise (handled, kept or ignored).
#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    responses((status = 200, description = "Verified (handled or ignored)"),
        (status = 400, description = "Bad signature or body", body = ErrorBody)))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(secret) = &state.config.billing.stripe_webhook_secret else {
        tracing::warn!("a Stripe webhook arrived, but SWITCHBOARD_STRIPE_WEBHOOK_SECRET is unset");
        return Err(StripeError::NotConfigured.into());
    };
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    stripe::verify_signature(
        signature,
        &body,
        secret.expose(),
        std::time::SystemTime::now(),
    )?;
    let event: Value = serde_json::from_slice(&body).map_err(|_| StripeError::MalformedEvent)?;
    let outcome = stripe::handle_event(&state.pool, &event).await?;
    Ok(Json(json!({"received": true, "outcome": outcome})))
}
