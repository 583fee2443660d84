//! The admin listener: a short match on the path. `/healthz` (alive, minimal), `/readyz` (every
//! upstream pool has a server that takes requests), `/metrics`, `/version`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

use crate::proxy::Shared;
use crate::version;

pub struct Admin {
    pub shared: Arc<Shared>,
    pub started: Instant,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "only GET is served here"}),
            );
        }
        match req.uri.path() {
            "/healthz" => json_response(
                StatusCode::OK,
                json!({
                    "status": "ok",
                    "version": version::VERSION,
                    "uptime_seconds": self.started.elapsed().as_secs(),
                }),
            ),
            "/readyz" => self.readiness(),
            "/metrics" => {
                let runtime = self.shared.runtime.load();
                let body = self.shared.metrics.render(&runtime);
                build(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body,
                )
            }
            "/version" => json_response(
                StatusCode::OK,
                json!({
                    "version": version::VERSION,
                    "git_sha": version::GIT_SHA,
                    "build_id": version::BUILD_ID,
                }),
            ),
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }
}

impl Admin {
    /// Ready when every upstream pool has a server that takes requests. The pools that are
    /// down are named by their config name only: never an address.
    fn readiness(&self) -> Response<Vec<u8>> {
        let runtime = self.shared.runtime.load();
        let down: Vec<&str> = runtime
            .upstreams
            .values()
            .filter(|pool| !pool.is_ready())
            .map(|pool| pool.name.as_str())
            .collect();
        if down.is_empty() {
            json_response(StatusCode::OK, json!({"status": "ready"}))
        } else {
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not ready", "upstreams_down": down}),
            )
        }
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    build(status, "application/json", bytes)
}

fn build(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&response.body().len().to_string()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, v);
    }
    response
}
