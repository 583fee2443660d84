//! The per-request context: what the gateway learned about a request as it went through the
//! phases, read back by the response policies, the metrics and the access log.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::log::LogName;
use crate::policy::api_key::KeyEntry;
use crate::policy::cors::CorsPolicy;
use crate::policy::forwarded::{ip_text, IpText, RequestId};
use crate::policy::headers::{HeaderForm, HeaderPolicy};
use crate::policy::in_flight::InFlightGuard;
use crate::policy::rate_limit;
use crate::policy::schema::{BodySchema, Mismatch};
use crate::policy::webhook::{self, WebhookPolicy};
use crate::snapshot::{PoolRef, RouteRef, Snapshot};

pub struct RequestCtx {
    /// The config snapshot this request started with; it finishes with the same one.
    pub runtime: Option<Snapshot>,
    pub request_id: RequestId,
    /// The client's address ([`crate::policy::forwarded::client_ip`]) and its text, made once:
    /// the upstream's `X-Real-IP` and the access log both write it.
    client: Option<(IpAddr, IpText)>,
    pub peer_trusted: bool,
    pub https: bool,
    /// How the response takes the gateway's headers, from the client's protocol (known once
    /// `request_filter` ran; the header map with spellings until then).
    pub header_form: HeaderForm,
    pub host: String,
    /// Why the request's host is refused (400): none named where one must be, or not a host
    /// (see `router::request_host`). Found by `identify`, answered by the hygiene checks.
    pub host_refusal: Option<&'static str>,
    pub route: Option<RouteRef>,
    /// The pool and server address of the current try.
    pub pool: Option<PoolRef>,
    pub server: Option<std::net::SocketAddr>,
    /// Connect attempts made so far.
    pub attempts: usize,
    pub started: Instant,
    pub upstream_started: Option<Instant>,
    /// What the gateway decided; the access log's `decision` field.
    pub decision: Cow<'static, str>,
    /// This request's place under the route's `max_in_flight`, given back when it ends.
    pub in_flight_place: Option<InFlightGuard>,
    /// The request path after normalisation, when it differs from what the client sent.
    pub normalized_path: Option<String>,
    /// The request's `Origin`, for CORS on the response.
    pub origin: Option<http::HeaderValue>,
    /// Body bytes seen so far, and the most the route allows.
    pub body_seen: u64,
    pub body_limit: u64,
    /// The route's schema when this request's body must be checked, the body held back until
    /// it is, and what was wrong with it.
    pub schema: Option<Arc<BodySchema>>,
    pub held_body: Vec<u8>,
    pub schema_mismatches: Option<Vec<Mismatch>>,
    /// The route's webhook policy when this request's body must be signed, and why it was not.
    pub webhook: Option<Arc<WebhookPolicy>>,
    pub webhook_failure: Option<webhook::Failure>,
    /// The API key the route's `auth` accepted: its place in the policy's entries (see
    /// [`RequestCtx::key_entry`]), which a request reads without touching a reference count.
    pub key: Option<u32>,
    /// The `RateLimit` header for an allowed request.
    pub rate_limit: Option<rate_limit::AllowedHeader>,
    /// The status the gateway answered with itself, if it did.
    pub gateway_status: Option<u16>,
    /// Whether this request is counted in `gateway_requests_in_flight`.
    pub in_flight: bool,
    /// The upstream's 5xx body is being replaced by this one (see `mask_errors`).
    pub mask_body: Option<bytes::Bytes>,
    pub masked: bool,
    /// The upstream's response was parsed without the route's `upstream_drop` fields, so
    /// `response_filter` need not look for them (taken there: once, for that response).
    pub upstream_fields_dropped: bool,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            runtime: None,
            request_id: RequestId::default(),
            client: None,
            peer_trusted: false,
            https: false,
            header_form: HeaderForm::Map,
            host: String::new(),
            route: None,
            pool: None,
            server: None,
            attempts: 0,
            started: Instant::now(),
            upstream_started: None,
            decision: Cow::Borrowed("proxied"),
            rate_limit: None,
            upstream_fields_dropped: false,
            in_flight_place: None,
            origin: None,
            schema: None,
            held_body: Vec::new(),
            schema_mismatches: None,
            webhook: None,
            webhook_failure: None,
            key: None,
            normalized_path: None,
            host_refusal: None,
            body_seen: 0,
            body_limit: u64::MAX,
            gateway_status: None,
            in_flight: false,
            mask_body: None,
            masked: false,
        }
    }

    /// The API key the route's `auth` accepted.
    pub fn key_entry(&self) -> Option<&KeyEntry> {
        let i = self.key?;
        self.route.as_ref()?.auth.as_ref()?.policy.entry(i)
    }

    /// The accepted key's id, for the access log and per-key rate limits.
    pub fn key_id(&self) -> Option<&str> {
        self.key_entry().map(|e| &*e.id)
    }

    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client.map(|(ip, _)| ip)
    }

    /// [`Self::client_ip`] as text.
    pub fn client_ip_text(&self) -> Option<&IpText> {
        self.client.as_ref().map(|(_, text)| text)
    }

    pub fn set_client_ip(&mut self, ip: IpAddr) {
        self.client = Some((ip, ip_text(ip)));
    }

    /// [`Self::key_id`] as the access log writes it.
    pub fn key_log_id(&self) -> Option<&LogName> {
        self.key_entry().map(|e| &e.log_id)
    }

    /// The response policy: the route's, or the defaults' when no route matched.
    pub fn header_policy(&self) -> Option<&Arc<HeaderPolicy>> {
        match &self.route {
            Some(route) => route.headers.as_ref(),
            None => self
                .runtime
                .as_ref()
                .and_then(|rt| rt.default_headers.as_ref()),
        }
    }

    /// The CORS policy: the route's, or the defaults' when no route matched.
    pub fn cors_policy(&self) -> Option<&Arc<CorsPolicy>> {
        match &self.route {
            Some(route) => route.cors.as_ref(),
            None => self
                .runtime
                .as_ref()
                .and_then(|rt| rt.default_cors.as_ref()),
        }
    }

    /// Where this request's metric series are kept: its route's, or `unrouted` for a request
    /// no route matched.
    pub fn series<'a>(
        &'a self,
        unrouted: &'a crate::metrics::RouteSeries,
    ) -> &'a crate::metrics::RouteSeries {
        self.route.as_ref().map_or(unrouted, |r| &r.series)
    }

    pub fn route_name(&self) -> &str {
        self.route
            .as_ref()
            .map_or(crate::metrics::NO_ROUTE, |r| r.name.as_str())
    }

    /// [`Self::route_name`] as the access log writes it.
    pub fn route_log_name(&self) -> &LogName {
        self.route
            .as_ref()
            .map_or(&crate::log::NO_ROUTE, |r| &r.log_name)
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
