//! The console (`GET /console`, issue 21) in a real browser: Debian's chromium driven by
//! Playwright (`tests/console/console_check.py`) against `switchboard serve`, signed in as
//! an admin and as a user; the page's numbers checked against the API, one write checked
//! through the API, a user key refused the admin views, the usage CSV read back (formula
//! cells written as text), and no browser console error or failed request. Screenshots:
//! `target/console-screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod support;

use support::{Serve, admin_key, chromium, python_with, user_key};
use switchboard_tests::fake_upstream::FakeUpstream;
use switchboard_tests::moto::workspace_root;
use switchboard_tests::test_db::TestDb;

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let (Some(python), Some(chromium)) = (python_with("playwright"), chromium()) else {
        return;
    };
    let db = TestDb::new().await;
    let upstream = FakeUpstream::start().await;
    let user = user_key(&db, "console-user", 5, None).await;
    let admin = admin_key(&db, "console-admin").await;
    let serve = Serve::start(&db, &upstream, "console").await;

    // Some spending first, so the account shows held-and-spent figures.
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", serve.base))
        .bearer_auth(&user)
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // Usage cells a spreadsheet would run as formulas (issue 27, finding 10): models named
    // like formulas (any printable model id is valid) and a request id starting with `-`;
    // the script reads them back from the usage CSV the page makes.
    let client = reqwest::Client::new();
    let providers: serde_json::Value = client
        .get(format!("{}/admin/providers?limit=200", serve.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let openai = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider_slug"] == "openai")
        .unwrap()["id"]
        .clone();
    for (model, request_id) in [
        ("=SUM(1,2)", "console-formula-1"),
        ("+SUM(1,2)", "-3-4"),
        ("@SUM(1,2)", "console-formula-3"),
    ] {
        let created = client
            .post(format!("{}/admin/models", serve.base))
            .bearer_auth(&admin)
            .json(&serde_json::json!({
                "provider_id": openai, "model_id": model, "context_window": 128000,
                "cost_per_1m_input_tokens": "0.15", "cost_per_1m_output_tokens": "0.60",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{model}");
        let answer = client
            .post(format!("{}/v1/chat/completions", serve.base))
            .bearer_auth(&user)
            .header("x-request-id", request_id)
            .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{model}");
    }

    // The page's own headers: a strict policy, never framed.
    let page = reqwest::get(format!("{}/console", serve.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("<script>") && !html.contains(" style="),
        "no inline script or style"
    );
    for asset in ["app.js", "style.css"] {
        let response = reqwest::get(format!("{}/console/assets/{asset}", serve.base))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{asset}");
    }
    let missing = reqwest::get(format!("{}/console/assets/nope.js", serve.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let shots = workspace_root().join("target/console-screenshots");
    let output = tokio::process::Command::new(&python)
        .arg(workspace_root().join("tests/console/console_check.py"))
        .args([serve.base.as_str(), admin.as_str(), user.as_str()])
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .output()
        .await
        .unwrap();
    serve.stop().await;
    assert!(
        output.status.success(),
        "console_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shots.join("admin-providers.png").is_file());
    assert!(shots.join("user-account.png").is_file());
}
