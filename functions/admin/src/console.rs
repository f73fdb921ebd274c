//! `GET /console` (api.md, "Console"): the web console's page and its assets, compiled into
//! the binary (no CDN, no external font: it works with no internet). The page signs in by
//! a pasted key, kept in the tab's `sessionStorage` and sent as `Authorization: Bearer` to
//! the same JSON API every client uses; there are no cookies, so no CSRF surface. Every
//! answer carries a strict Content-Security-Policy (scripts and styles from this origin
//! only: no inline script, no `eval`) and refuses to be framed. See docs/console.md.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

const INDEX: &str = include_str!("../console/index.html");

/// (name, content type, body) of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
    // uPlot 1.6.32 (MIT, console/vendor/LICENSE-uplot), from npm, unchanged: the charts.
    (
        "uplot.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/vendor/uplot-1.6.32.min.js"),
    ),
    (
        "uplot.css",
        "text/css; charset=utf-8",
        include_str!("../console/vendor/uplot-1.6.32.min.css"),
    ),
];

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The console's paths, all `GET`, with their handlers: [`router`] mounts exactly these and
/// [`route_list`] names them.
///
/// The page refers to its assets relatively (`console/assets/app.js`) and the script finds
/// the API relative to the page, so the console works under any prefix: `/prod/console`
/// behind an execute-api stage, `/console` at a custom domain's root. From `/console/`
/// (trailing slash) the same references resolve one level down, to
/// `/console/console/assets/...`: served too, rather than redirecting, because whether a
/// trailing slash reaches the function through API Gateway is not something to rely on.
fn routes() -> [(&'static str, MethodRouter); 4] {
    [
        ("/console", get(index)),
        ("/console/", get(index)),
        ("/console/assets/{name}", get(asset)),
        ("/console/console/assets/{name}", get(asset)),
    ]
}

pub fn router() -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
}

/// Every (method, path) [`router`] serves.
pub fn route_list() -> Vec<(Method, String)> {
    routes()
        .into_iter()
        .map(|(path, _)| (Method::GET, path.to_string()))
        .collect()
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => page(content_type, body),
        None => switchboard_core::http::ApiError::NotFound(format!(
            "no console asset named `{}`",
            name.chars().take(64).collect::<String>()
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use tower::ServiceExt;

    async fn get_text(path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Root-absolute references (`"/admin/..."`, `/console/assets/...`) would miss the
    /// stage prefix of an execute-api URL (`/prod/console`): none in what is served.
    #[tokio::test]
    async fn the_served_page_and_script_use_no_root_absolute_urls() {
        let (status, html) = get_text("/console").await;
        assert_eq!(status, StatusCode::OK);
        for needle in ["\"/console/", "\"/admin", "\"/v1", "'/"] {
            assert!(!html.contains(needle), "index.html has {needle}");
        }
        assert!(html.contains("src=\"console/assets/app.js\""), "{html}");
        let (status, script) = get_text("/console/assets/app.js").await;
        assert_eq!(status, StatusCode::OK);
        for needle in [
            "\"/admin",
            "`/admin",
            "'/admin",
            "\"/v1",
            "`/v1",
            "'/v1",
            "/console/assets",
        ] {
            assert!(!script.contains(needle), "app.js has {needle}");
        }
        assert!(script.contains("fetch(new URL(path, apiBase)"));
    }

    /// The page's relative references resolve from `/console` and from `/console/`; every
    /// asset is served at both places they can resolve to.
    #[tokio::test]
    async fn assets_resolve_from_the_page_with_or_without_a_trailing_slash() {
        let (_, html) = get_text("/console/").await;
        let refs: Vec<&str> = html
            .split(['"'])
            .filter(|part| part.starts_with("console/assets/"))
            .collect();
        assert_eq!(refs.len(), 4, "{html}");
        for page in ["/prod/console", "/prod/console/", "/console", "/console/"] {
            let dir = &page[..=page.rfind('/').unwrap()];
            let prefix = page
                .strip_suffix("console")
                .or(page.strip_suffix("console/"))
                .unwrap();
            for reference in &refs {
                // What the browser asks for, less the stage API Gateway takes off.
                let resolved = format!("{dir}{reference}");
                let seen = resolved.strip_prefix(prefix.trim_end_matches('/')).unwrap();
                let (status, _) = get_text(seen).await;
                assert_eq!(status, StatusCode::OK, "{reference} from {page}: {seen}");
            }
        }
    }
}
