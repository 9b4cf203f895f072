//! `GET /ui`: the operator dashboard, served from the binary.
//!
//! Three static files (`assets/ui/`), compiled in with `include_str!`, so the page needs no
//! files beside the binary and fetches nothing from the network at run time: plain HTML, CSS
//! and JavaScript, no build step. The page itself holds no data; it calls the API with the
//! token the operator enters (kept in the browser's sessionStorage) and follows
//! `GET /api/v1/events`. A Content-Security-Policy of `'self'` keeps it that way.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX_HTML: &str = include_str!("../../assets/ui/index.html");
const APP_JS: &str = include_str!("../../assets/ui/app.js");
const STYLE_CSS: &str = include_str!("../../assets/ui/style.css");

/// Only the bridge itself: no inline scripts, no third-party origins.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui`.
#[utoipa::path(
    get,
    path = "/ui",
    tag = "dashboard",
    operation_id = "dashboard",
    description = "The operator dashboard (HTML). It holds no data: it calls the API with the \
        token the operator enters.",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/`: the same page under its canonical address.
#[utoipa::path(
    get,
    path = "/ui/",
    tag = "dashboard",
    operation_id = "dashboardSlash",
    responses((status = 308, description = "Permanent redirect to `/ui`",
        headers(("Location" = String, description = "`/ui`"))))
)]
pub async fn index_slash() -> Redirect {
    Redirect::permanent("/ui")
}

/// `GET /ui/app.js`.
#[utoipa::path(
    get,
    path = "/ui/app.js",
    tag = "dashboard",
    operation_id = "dashboardScript",
    responses((status = 200, description = "The dashboard's script", body = String,
        content_type = "text/javascript"))
)]
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/style.css`.
#[utoipa::path(
    get,
    path = "/ui/style.css",
    tag = "dashboard",
    operation_id = "dashboardStyle",
    responses((status = 200, description = "The dashboard's style sheet", body = String,
        content_type = "text/css"))
)]
pub async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads exactly the two assets this module serves, and nothing from elsewhere.
    #[test]
    fn the_page_references_only_its_own_assets() {
        assert!(INDEX_HTML.contains(r#"src="/ui/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/ui/style.css""#));
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!text.contains("http://"), "no absolute http URL");
            assert!(!text.contains("https://"), "no absolute https URL");
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script (CSP)");
    }
}
