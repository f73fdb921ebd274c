//! Every hold is an upper bound of what the provider bills (api.md, Chat function): for
//! each kind of input part, the fake provider bills the request it receives by the
//! provider's documented formulas (`fake_billing`: images by size, PDFs by page, Anthropic
//! prompt-cache writes by lifetime) and the test checks that the hold covered the capture.
//! Each request is sized so that the flat estimate of before (765 tokens an image, a PDF
//! as its base64 text, `cache_control` seen only on content parts) held less than that.
//! Inputs a provider would fetch by URL and bill by content are refused on the platform's
//! key (400 naming the field, no hold left) and pass on the user's own key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchboard_tests::fake_billing::{base64, pdf, png};
use switchboard_tests::fake_upstream::Reply;
use switchboard_tests::gateway::Gateway;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The fake's answer: 3 completion tokens, the input as the provider bills it.
fn billed() -> Reply {
    Reply::text("Seen.")
        .with_usage(0, 3, 0)
        .billed_from_request()
}

/// A gateway whose catalog also has `gpt-4o-mini` and `gemini-2.0-flash` (list prices).
async fn gateway() -> Gateway {
    let gw = Gateway::start().await;
    gw.db
        .connect()
        .await
        .batch_execute(
            "INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 supports_function_calling, supports_vision, supports_json_mode,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'GPT-4o mini', 'gpt-4o-mini', 128000, 16384, true, true, true, 0.15, 0.60
             FROM llm_providers WHERE provider_slug = 'openai';
             INSERT INTO llm_models (provider_id, model_name, model_id, context_window, max_tokens,
                 supports_function_calling, supports_vision, supports_json_mode,
                 cost_per_1m_input_tokens, cost_per_1m_output_tokens)
             SELECT id, 'Gemini 2.0 Flash', 'gemini-2.0-flash', 1000000, 8192, true, true, true, 0.10, 0.40
             FROM llm_providers WHERE provider_slug = 'google';",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    gw
}

/// `POST /v1/messages` with the user's key.
async fn messages(gw: &Gateway, key: &str, body: Value) -> (u16, Value) {
    messages_with(gw, key, body, &[]).await
}

async fn messages_with(
    gw: &Gateway,
    key: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = gw.send(request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The user's one hold and what was captured: (held, captured, prompt tokens billed).
async fn hold_and_capture(gw: &Gateway, user: &str) -> (Decimal, Decimal, i32) {
    let client = gw.db.connect().await;
    let hold = client
        .query_one(
            "SELECT amount_usd, state FROM credit_holds WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(hold.get::<_, String>(1), "captured");
    let captured: Decimal = client
        .query_one(
            "SELECT -sum(amount_usd) FROM ledger_entries WHERE user_id = $1 AND kind = 'capture'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    let prompt: i32 = client
        .query_one(
            "SELECT prompt_tokens FROM llm_usage_logs WHERE user_id = $1 AND status_code = 200",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    (hold.get(0), captured, prompt)
}

/// The hold covered the capture, which billed at least `media_tokens` of input.
async fn assert_covered(gw: &Gateway, user: &str, media_tokens: i32) {
    let (held, captured, prompt) = hold_and_capture(gw, user).await;
    assert!(
        prompt >= media_tokens,
        "the fake billed {prompt} prompt tokens, fewer than the media's {media_tokens}"
    );
    assert!(captured > Decimal::ZERO);
    assert!(
        held >= captured,
        "held {held} < captured {captured} ({prompt} prompt tokens)"
    );
    gw.assert_ledger_consistent(user).await;
}

async fn active_holds(gw: &Gateway, user: &str) -> i64 {
    gw.db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM credit_holds WHERE user_id = $1 AND state = 'active'",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}

fn image_part(url: String) -> Value {
    json!({"type": "image_url", "image_url": {"url": url}})
}

fn png_data_url(width: u32, height: u32) -> String {
    format!("data:image/png;base64,{}", base64(&png(width, height)))
}

#[tokio::test]
async fn an_openai_image_is_held_at_its_tiles_and_the_mini_models_multiplier() {
    let gw = gateway().await;
    let key = gw.user("tiles", "free", "5").await;
    gw.upstream.push(billed());
    // gpt-4o-mini bills a 1024 × 1024 image as 2,833 + 4 tiles × 5,667 = 25,501 tokens.
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this?"}, image_part(png_data_url(1024, 1024))]}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_covered(&gw, "tiles", 25_501).await;
}

#[tokio::test]
async fn an_openai_image_by_url_is_held_at_the_models_largest_image() {
    let gw = gateway().await;
    let key = gw.user("by-url", "free", "5").await;
    // The provider fetches it: 2048 × 768 is 8 tiles, 2,833 + 8 × 5,667 = 48,169 tokens.
    let url = gw.upstream.host("wide.png", png(2048, 768));
    gw.upstream.push(billed());
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "Describe it."}, image_part(url.clone())]}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(
        status, 200,
        "an OpenAI model can take an image URL: {answer}"
    );
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(sent["messages"][0]["content"][1]["image_url"]["url"], url);
    assert_covered(&gw, "by-url", 48_169).await;
}

#[tokio::test]
async fn an_anthropic_image_is_held_at_claudes_size_formula() {
    let gw = gateway().await;
    let key = gw.user("claude-image", "starter", "5").await;
    gw.upstream.push(billed());
    // 1092 × 1092 is about 1,590 tokens for Claude.
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                     "data": base64(&png(1092, 1092))}},
                    {"type": "text", "text": "What is this?"}]}]});
    // At `precision` no automatic cache breakpoint doubles the hold's prompt price.
    let (status, answer) = messages_with(&gw, &key, body, &[("x-power-level", "precision")]).await;
    assert_eq!(status, 200, "{answer}");
    assert_covered(&gw, "claude-image", 1_590).await;
}

#[tokio::test]
async fn a_gemini_image_is_held_at_its_tiles() {
    let gw = gateway().await;
    let key = gw.user("gemini-image", "free", "5").await;
    gw.upstream.push(billed());
    // 1600 × 900 is 3 × 2 tiles of 258 tokens for Gemini 2.
    let body = json!({"model": "gemini-2.0-flash", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this?"}, image_part(png_data_url(1600, 900))]}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        gw.upstream.last_request().unwrap().body["contents"][0]["parts"][1]["inlineData"]
            .is_object()
    );
    assert_covered(&gw, "gemini-image", 6 * 258).await;
}

#[tokio::test]
async fn a_base64_pdf_is_held_by_its_pages() {
    let gw = gateway().await;
    let key = gw.user("pdf-reader", "starter", "5").await;
    gw.upstream.push(billed());
    // Five pages: each page's text and an image of the page (918 × 1188: 1,455 tokens).
    let report = pdf(5, "Revenue grew in every region this quarter.");
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                     "data": base64(&report)}},
                    {"type": "text", "text": "Summarise the report."}]}]});
    let (status, answer) = messages(&gw, &key, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_covered(&gw, "pdf-reader", 5 * 1_455).await;
}

#[tokio::test]
async fn an_openai_file_part_with_a_base64_pdf_is_held_by_its_pages() {
    let gw = gateway().await;
    let key = gw.user("pdf-file", "free", "5").await;
    gw.upstream.push(billed());
    // Five pages; gpt-4o bills each page's image (918 × 1188) as 4 tiles: 765 tokens.
    let report = pdf(5, "Revenue grew in every region this quarter.");
    let body = json!({"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "Summarise the report."},
                    {"type": "file", "file": {"filename": "report.pdf",
                     "file_data": format!("data:application/pdf;base64,{}", base64(&report))}}]}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        gw.upstream.last_request().unwrap().body["messages"][0]["content"][1]["type"],
        "file"
    );
    assert_covered(&gw, "pdf-file", 5 * 765).await;
}

#[tokio::test]
async fn a_text_document_is_held_as_its_text() {
    let gw = gateway().await;
    let key = gw.user("text-doc", "starter", "5").await;
    gw.upstream.push(billed());
    let text = "the cat sat on the mat and then it ran far away ".repeat(300);
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}},
                    {"type": "text", "text": "Summarise."}]}]});
    let (status, answer) = messages(&gw, &key, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_covered(&gw, "text-doc", 3_000).await;
}

/// A Messages API request whose one tool carries `cache_control` (Claude Code's
/// breakpoint), with a long description: the prefix the provider writes to its cache.
fn cached_tool(ttl: Option<&str>) -> Value {
    let mut cache_control = json!({"type": "ephemeral"});
    if let Some(ttl) = ttl {
        cache_control["ttl"] = json!(ttl);
    }
    json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16,
           "tools": [{"name": "lookup",
                      "description": "the cat sat on the mat and then it ran far away ".repeat(200),
                      "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                      "cache_control": cache_control}],
           "messages": [{"role": "user", "content": "Hi."}]})
}

async fn tool_cache_write_is_held_at_its_price(ttl: Option<&str>, user: &str) {
    let gw = gateway().await;
    let key = gw.user(user, "starter", "5").await;
    gw.upstream.push(billed());
    // At `precision` the gateway adds no breakpoints of its own: only the tool's.
    let (status, answer) = messages_with(
        &gw,
        &key,
        cached_tool(ttl),
        &[("x-power-level", "precision")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        gw.upstream.last_request().unwrap().body["tools"][0]["cache_control"]["ttl"],
        ttl.map_or(Value::Null, |ttl| json!(ttl))
    );
    // The provider wrote the whole tool prefix to its cache, at 1.25 × or 2 × input.
    let written = answer["usage"]["cache_creation_input_tokens"]
        .as_i64()
        .unwrap();
    assert!(written >= 2_000, "{answer}");
    let (held, captured, _) = hold_and_capture(&gw, user).await;
    let write_price = if ttl == Some("1h") { d("6") } else { d("3.75") };
    assert!(captured >= Decimal::from(written) * write_price / d("1000000"));
    assert!(held >= captured, "held {held} < captured {captured}");
    gw.assert_ledger_consistent(user).await;
}

#[tokio::test]
async fn a_tool_level_five_minute_breakpoint_is_held_at_the_cache_write_price() {
    tool_cache_write_is_held_at_its_price(None, "tool-cache-5m").await;
}

#[tokio::test]
async fn a_tool_level_one_hour_breakpoint_is_held_at_the_one_hour_price() {
    tool_cache_write_is_held_at_its_price(Some("1h"), "tool-cache-1h").await;
}

#[tokio::test]
async fn tool_result_and_assistant_breakpoints_reach_anthropic_and_are_held() {
    let gw = gateway().await;
    let key = gw.user("agent", "starter", "5").await;
    gw.upstream.push(billed());
    let hour = json!({"type": "ephemeral", "ttl": "1h"});
    let five = json!({"type": "ephemeral"});
    let forecast = "the sun is out and the sky is blue all day ".repeat(150);
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16,
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"},
                 "cache_control": hour}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": forecast, "cache_control": five},
                {"type": "text", "text": "Summarise."}]}]});
    let (status, answer) = messages(&gw, &key, body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    let assistant = &sent["messages"][1]["content"];
    assert_eq!(assistant[1]["type"], "tool_use", "{sent}");
    assert_eq!(assistant[1]["cache_control"], hour, "{sent}");
    assert_eq!(assistant[0].get("cache_control"), None);
    let result = &sent["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result", "{sent}");
    assert_eq!(result["cache_control"], five, "{sent}");
    // Both breakpoints were written (the hour one up to the tool call).
    assert!(
        answer["usage"]["cache_creation_input_tokens"]
            .as_i64()
            .unwrap()
            >= 1_500
    );
    assert_covered(&gw, "agent", 0).await;

    // The same breakpoints from chat completions, OpenAI-style on the parts.
    let key = gw.user("agent-openai-style", "starter", "5").await;
    gw.upstream.push(billed());
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look.", "cache_control": hour}],
             "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_1",
             "content": [{"type": "text", "text": forecast, "cache_control": five}]}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(status, 200, "{answer}");
    let sent = gw.upstream.last_request().unwrap().body;
    assert_eq!(
        sent["messages"][1]["content"][0]["cache_control"], hour,
        "{sent}"
    );
    assert_eq!(sent["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(
        sent["messages"][2]["content"][0]["cache_control"], five,
        "{sent}"
    );
    assert_covered(&gw, "agent-openai-style", 0).await;
}

#[tokio::test]
async fn inputs_anthropic_would_fetch_are_refused_on_the_platform_key() {
    let gw = gateway().await;
    let key = gw.user("fetcher", "starter", "5").await;
    let url = gw
        .upstream
        .host("report.pdf", pdf(40, "Forty pages of numbers."));
    // A document by URL on the Messages API.
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "document", "source": {"type": "url", "url": url}},
                    {"type": "text", "text": "Summarise."}]}]});
    let (status, answer) = messages(&gw, &key, body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("messages[0].content[0].source.url") && message.contains("BYOK"),
        "{message}"
    );
    // An image by URL on chat completions: the same, with `param`.
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this?"}, image_part(gw.upstream.host("cat.png", png(800, 600)))]}]});
    let (status, _, answer) = gw.chat(&key, &body, &[]).await;
    assert_eq!(
        status, 400,
        "every candidate refused it: a 400, not a 503: {answer}"
    );
    assert_eq!(answer["error"]["type"], "invalid_request_error");
    assert_eq!(
        answer["error"]["param"],
        "messages[0].content[1].image_url.url"
    );
    // Nothing reached a provider, nothing is held or charged.
    assert_eq!(gw.upstream.request_count(), 0);
    assert_eq!(active_holds(&gw, "fetcher").await, 0);
    assert_eq!(gw.balance("fetcher").await, d("5"));
    gw.assert_ledger_consistent("fetcher").await;
}

#[tokio::test]
async fn an_image_url_goes_to_the_candidate_that_can_bound_it() {
    let gw = gateway().await;
    // `auto` at precision: Claude first, GPT-4o as the fallback.
    gw.db
        .connect()
        .await
        .batch_execute(
            "INSERT INTO llm_routing_rules (model_id, power_level, is_fallback)
             SELECT m.id, 'precision', true FROM llm_models m JOIN llm_providers p ON p.id = m.provider_id
             WHERE m.model_id = 'gpt-4o' AND p.provider_slug = 'openai'",
        )
        .await
        .unwrap();
    gw.state.catalog.invalidate();
    let key = gw.user("mixed", "starter", "5").await;
    gw.upstream.push(billed());
    let url = gw.upstream.host("cat.png", png(800, 600));
    let body = json!({"model": "auto", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this?"}, image_part(url)]}]});
    let (status, _, answer) = gw
        .chat(&key, &body, &[("x-power-level", "precision")])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["_metadata"]["provider_used"], "openai", "{answer}");
    // Claude was skipped before any call: one upstream request, to OpenAI.
    assert_eq!(gw.upstream.request_count(), 1);
    assert_eq!(
        gw.upstream.last_request().unwrap().path,
        "/v1/chat/completions"
    );
    assert_covered(&gw, "mixed", 765).await;
}

#[tokio::test]
async fn inputs_anthropic_would_fetch_pass_on_the_users_own_key() {
    let gw = gateway().await;
    let key = gw.user("own-key", "starter", "5").await;
    let request = http::Request::builder()
        .method("PUT")
        .uri("/v1/byok/anthropic")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({"api_key": "sk-ant-users-own-key-0123456789abcdef"}).to_string(),
        ))
        .unwrap();
    let response = gw.send(request).await;
    assert_eq!(response.status(), 200);
    let url = gw.upstream.host("report.pdf", pdf(3, "Three pages."));
    gw.upstream.push(billed());
    let body = json!({"model": "claude-3-5-sonnet-20241022", "max_tokens": 16, "messages": [{"role": "user",
        "content": [{"type": "document", "source": {"type": "url", "url": url}},
                    {"type": "text", "text": "Summarise."}]}]});
    let (status, answer) = messages(&gw, &key, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["_metadata"]["byok"], true);
    let sent = gw.upstream.last_request().unwrap();
    assert_eq!(
        sent.header("x-api-key"),
        Some("sk-ant-users-own-key-0123456789abcdef")
    );
    assert_eq!(sent.body["messages"][0]["content"][0]["source"]["url"], url);
    gw.assert_ledger_consistent("own-key").await;
}
