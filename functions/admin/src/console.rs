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
fn routes() -> [(&'static str, MethodRouter); 3] {
    [
        ("/console", get(index)),
        ("/console/", get(index)),
        ("/console/assets/{name}", get(asset)),
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
