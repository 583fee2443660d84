//! The one writer of gateway-made responses. Pingora skips `response_filter` for a response
//! written from `request_filter`, so every response the gateway makes itself is built here and
//! passes through [`finish_response`], the same function `response_filter` calls for upstream
//! responses: what a response policy adds, it adds to both.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use pingora_error::{Error, ErrorType::InvalidHTTPHeader, Result};
use pingora_http::{ParsedHeaderName, ResponseHeader};
use pingora_proxy::Session;
use serde::Serialize;

use crate::ctx::RequestCtx;
use crate::policy::headers::{HeaderForm, ResponseLines};
use crate::policy::rate_limit::{self, gcra::Outcome, RateLimitPolicy};
use crate::policy::schema::Mismatch;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A response the gateway makes itself. Built by the named constructors below.
pub struct GatewayResponse {
    status: StatusCode,
    message: Cow<'static, str>,
    /// A fixed body (`[[static]]`) instead of the JSON error.
    fixed: Option<(HeaderValue, Bytes)>,
    /// What a body got wrong against the route's schema.
    mismatches: Option<Vec<Mismatch>>,
    /// The access log's `decision`.
    decision: Cow<'static, str>,
    /// A bounded label for `gateway_requests_rejected_total`: the decision itself when it is
    /// fixed, the kind of refusal when the decision names a policy.
    reason: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
    location: Option<String>,
    /// Keep the client connection open afterwards.
    keepalive: bool,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [Mismatch]>,
}

impl GatewayResponse {
    fn new(
        status: StatusCode,
        message: impl Into<Cow<'static, str>>,
        decision: impl Into<Cow<'static, str>>,
    ) -> Self {
        let decision = decision.into();
        GatewayResponse {
            status,
            message: message.into(),
            fixed: None,
            mismatches: None,
            reason: match decision {
                Cow::Borrowed(fixed) => fixed,
                Cow::Owned(_) => "other",
            },
            decision,
            headers: Vec::new(),
            location: None,
            keepalive: true,
        }
    }

    /// A `[[static]]` response.
    pub fn fixed(content_type: HeaderValue, body: Bytes) -> Self {
        let mut r = Self::new(StatusCode::OK, "", "static");
        r.fixed = Some((content_type, body));
        r
    }

    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no route for this host and path",
            "no_route",
        )
    }

    pub fn method_not_allowed(allow: HeaderValue) -> Self {
        let mut r = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
            "method_not_allowed",
        );
        r.headers.push((http::header::ALLOW, allow));
        r
    }

    pub fn bad_request(message: &'static str) -> Self {
        let mut r = Self::new(StatusCode::BAD_REQUEST, message, "bad_request");
        r.keepalive = false;
        r
    }

    /// 308 keeps the method and body, unlike 301.
    pub fn redirect_https(location: String) -> Self {
        let mut r = Self::new(
            StatusCode::PERMANENT_REDIRECT,
            "this site is served over HTTPS",
            "redirect_https",
        );
        r.location = Some(location);
        r
    }

    /// 429 from a rate limit: `Retry-After`, `X-RateLimit-*` and the IETF `RateLimit` fields.
    pub fn rate_limited(policy: &RateLimitPolicy, outcome: &Outcome) -> Self {
        let mut r = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests",
            policy.decision.clone(),
        );
        r.headers = rate_limit::limited_headers(policy, outcome);
        r.reason = "rate_limited";
        r
    }

    /// 429 for a client locked out after failures, or over its in-flight cap.
    pub fn too_many(
        message: &'static str,
        decision: impl Into<Cow<'static, str>>,
        reason: &'static str,
        retry_after_secs: u64,
    ) -> Self {
        let mut r = Self::new(StatusCode::TOO_MANY_REQUESTS, message, decision);
        r.reason = reason;
        r.headers.push((
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        ));
        r
    }

    /// A rate limit keyed on a header the request did not send.
    pub fn missing_rate_limit_key(policy: &RateLimitPolicy, header: &HeaderName) -> Self {
        let mut r = Self::new(
            StatusCode::BAD_REQUEST,
            format!("this route is rate limited per `{header}`: send that header"),
            format!("missing_key:{}", policy.name),
        );
        r.reason = "missing_key";
        r
    }

    /// A shared limiter store that did not answer, with `on_error = "deny"`.
    pub fn rate_limit_unavailable(policy: &RateLimitPolicy) -> Self {
        let mut r = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the rate limiter is unavailable",
            format!("rate_limit_unavailable:{}", policy.name),
        );
        r.reason = "rate_limit_unavailable";
        r
    }

    /// 403: the client IP is not allowed on this route.
    pub fn ip_denied() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not allowed from this address",
            "ip_denied",
        )
    }

    /// 401 for a missing, unknown or expired API key, with the policy's challenge.
    pub fn unauthorized(challenge: HeaderValue, message: &'static str) -> Self {
        let mut r = Self::new(StatusCode::UNAUTHORIZED, message, "unauthorized");
        r.headers.push((http::header::WWW_AUTHENTICATE, challenge));
        r
    }

    /// 403 for a valid API key without any of the route's roles.
    pub fn forbidden_role() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "this API key does not have a role this route requires",
            "forbidden",
        )
    }

    /// 401 for a webhook whose signature does not check out.
    pub fn webhook_refused(message: &'static str) -> Self {
        let mut r = Self::new(StatusCode::UNAUTHORIZED, message, "webhook_signature");
        r.keepalive = false;
        r
    }

    /// 403 to a CORS preflight from an origin, method or header the policy does not allow.
    pub fn cors_refused(message: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, message, "cors_refused")
    }

    /// 204 to an allowed CORS preflight.
    pub fn preflight(headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        let mut r = Self::new(StatusCode::NO_CONTENT, "", "cors_preflight");
        r.headers = headers;
        r
    }

    pub fn payload_too_large(limit: u64) -> Self {
        let mut r = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over this route's limit of {limit} bytes"),
            "body_too_large",
        );
        // The rest of the body is not read: the connection cannot be reused.
        r.keepalive = false;
        r
    }

    /// 400 for a request that declares both `Content-Length` and `Transfer-Encoding`.
    pub fn smuggling() -> Self {
        let mut r = Self::new(
            StatusCode::BAD_REQUEST,
            "a request may not have both Content-Length and Transfer-Encoding",
            "smuggling",
        );
        r.keepalive = false;
        r
    }

    /// 400 for a path that different servers would read differently.
    pub fn bad_path(reason: &'static str) -> Self {
        let mut r = Self::new(StatusCode::BAD_REQUEST, reason, "bad_path");
        r.keepalive = false;
        r
    }

    /// 400 for a body that is not JSON, or does not match the route's schema.
    pub fn schema_mismatch(mismatches: Vec<Mismatch>) -> Self {
        let mut r = Self::new(
            StatusCode::BAD_REQUEST,
            "the request body does not match the schema",
            "schema",
        );
        r.mismatches = Some(mismatches);
        r.keepalive = false;
        r
    }

    pub fn uri_too_long() -> Self {
        let mut r = Self::new(
            StatusCode::URI_TOO_LONG,
            "the request URI is too long",
            "uri_too_long",
        );
        r.keepalive = false;
        r
    }

    pub fn header_too_large() -> Self {
        let mut r = Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request header fields are too large or too many",
            "header_too_large",
        );
        r.keepalive = false;
        r
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this route does not accept this Content-Type",
            "content_type",
        )
    }

    pub fn bad_gateway() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "the upstream could not be reached",
            "upstream_error",
        )
    }

    pub fn gateway_timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the upstream did not answer in time",
            "upstream_timeout",
        )
    }

    pub fn no_healthy_upstream() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream server is available",
            "upstream_unavailable",
        )
    }

    pub fn internal_error() -> Self {
        let mut r = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            "internal_error",
        );
        r.keepalive = false;
        r
    }

    /// Whether this answers the request as asked (a static file, a preflight) rather than
    /// refusing it.
    pub fn is_refusal(&self) -> bool {
        self.status.is_client_error() || self.status.is_server_error()
    }

    pub fn reason(&self) -> &'static str {
        self.reason
    }

    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// Writes the response to the client. Records the status and decision in `ctx`.
    ///
    /// Boxed: writing a response through Pingora is a future of about 1.5 KB, which would
    /// otherwise be part of `request_filter`'s future on every request, refused or not.
    pub fn send<'a>(
        self,
        session: &'a mut Session,
        ctx: &'a mut RequestCtx,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        crate::boxed::in_place(|| self.write(session, ctx))
    }

    async fn write(self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let (content_type, body) = match self.fixed {
            Some((content_type, body)) => (content_type, body),
            None => (
                HeaderValue::from_static("application/json"),
                Bytes::from(
                    serde_json::to_vec(&ErrorBody {
                        error: &self.message,
                        request_id: ctx.request_id.as_str(),
                        location: self.location.as_deref(),
                        errors: self.mismatches.as_deref(),
                    })
                    .unwrap_or_default(),
                ),
            ),
        };
        let mut header = ResponseHeader::build(self.status, Some(6 + self.headers.len()))?;
        // A 204 has no body and says nothing about one.
        let no_content = self.status == StatusCode::NO_CONTENT;
        if !no_content {
            header.insert_header(CONTENT_TYPE, content_type)?;
            header.insert_header(CONTENT_LENGTH, body.len())?;
            header.insert_header(CACHE_CONTROL, "no-store")?;
        }
        if let Some(location) = &self.location {
            header.insert_header(LOCATION, location.as_str())?;
        }
        for (name, value) in self.headers {
            header.insert_header(name, value)?;
        }
        ctx.gateway_status = Some(self.status.as_u16());
        ctx.decision = self.decision;
        finish_response(&mut header, ctx)?;
        if !self.keepalive {
            session.set_keepalive(None);
        }
        let head_only = no_content || session.req_header().method == Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}

/// The gateway's whole HTTP/1.1 answer to a request head Pingora could not parse (written
/// in place of Pingora's bare 400, see `head_deadline`): the JSON error with a request id and
/// the `[defaults]` response policies, and `Connection: close`.
pub fn unparsable_head(runtime: std::sync::Arc<crate::runtime::Runtime>, https: bool) -> Vec<u8> {
    let mut ctx = RequestCtx::new();
    ctx.runtime = Some(crate::snapshot::Snapshot::of(runtime));
    ctx.https = https;
    ctx.header_form = HeaderForm::H1Lines;
    ctx.request_id = crate::policy::forwarded::new_request_id();
    let body = error_json(
        "the request head is malformed",
        ctx.request_id.as_str(),
        None,
    );
    let mut out = Vec::with_capacity(1024 + body.len());
    out.extend_from_slice(b"HTTP/1.1 400 Bad Request\r\n");
    let Ok(mut header) = ResponseHeader::build(StatusCode::BAD_REQUEST, Some(16)) else {
        return out;
    };
    let built = header
        .insert_header(CONTENT_TYPE, "application/json")
        .and_then(|_| header.insert_header(CONTENT_LENGTH, body.len()))
        .and_then(|_| header.insert_header(CACHE_CONTROL, "no-store"))
        .and_then(|_| header.insert_header(http::header::CONNECTION, "close"))
        .and_then(|_| finish_response(&mut header, &ctx));
    if built.is_ok() {
        header.header_to_h1_wire(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// The gateway's JSON error body.
pub fn error_json(message: &str, request_id: &str, location: Option<&str>) -> Bytes {
    let body = ErrorBody {
        error: message,
        request_id,
        location,
        errors: None,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The response policies, applied to upstream and gateway-made responses alike: the route's
/// header policy (or the defaults' when no route matched), then the request id.
pub fn finish_response(header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    finish_response_of(header, ctx, false)
}

/// [`finish_response`]; `dropped` when the response is an upstream's that Pingora parsed
/// without the route's `upstream_drop` fields, so there is nothing of them to look for.
pub fn finish_response_of(
    header: &mut ResponseHeader,
    ctx: &RequestCtx,
    dropped: bool,
) -> Result<()> {
    let form = ctx.header_form;
    if form == HeaderForm::H2 {
        // HTTP/2 has no header case: every insert below then touches one map, not two. Few
        // go into the map (an origin echoed by CORS): a header policy's fields go as
        // blocks, the request id and `RateLimit` as literals, so no room is reserved (growing
        // the map for it was about 700 instructions a response).
        header.drop_case();
    }
    let mut lines = ResponseLines::new(form);
    let rate_limit = match (&ctx.route, &ctx.rate_limit) {
        (Some(route), Some(value)) => route.rate_limit_policy.as_ref().map(|p| (p, value)),
        _ => None,
    };
    // The response's own of the names the gateway sets below go when the gateway's lines,
    // or an HTTP/2 block, would not replace them (a map insert does): in the header policy's
    // walk over the response's few headers when there is a policy, else in one of their own.
    // A removal per name would cost two hash lookups even when the name is absent, as it
    // nearly always is.
    let rate_limited = rate_limit.is_some();
    let gateways = |k: &HeaderName| {
        form != HeaderForm::Map
            && (*k == X_REQUEST_ID
                || (rate_limited && (*k == RATELIMIT_POLICY_NAME || k == RATELIMIT.name())))
    };
    match ctx.header_policy() {
        Some(policy) if dropped => policy.apply_set(header, ctx.https, form)?,
        Some(policy) => policy.apply_removing(header, ctx.https, form, gateways)?,
        None if form != HeaderForm::Map && !dropped => {
            crate::policy::headers::remove_matching(header, gateways)
        }
        None => {}
    }
    // A preflight's answer carries its own CORS headers, a refused one none; everything else
    // gets the policy's.
    let preflight = ctx.decision == "cors_preflight" || ctx.decision == "cors_refused";
    if let Some(cors) = ctx.cors_policy().filter(|_| !preflight) {
        cors.apply(header, ctx.origin.as_ref(), &mut lines, dropped)?;
    }
    if let Some((policy, value)) = rate_limit {
        policy.set(header, form)?;
        lines.set_unique_text(header, &RATELIMIT, value.as_bytes())?;
    }
    lines.set_unique_text(header, &X_REQUEST_ID_NAME, ctx.request_id.as_bytes())?;
    Ok(())
}

/// A header value the gateway makes (a request id, an address, a host, a key's id).
pub fn header_value<V: TryInto<HeaderValue>>(value: V) -> Result<HeaderValue> {
    value
        .try_into()
        .map_err(|_| Error::explain(InvalidHTTPHeader, "invalid header value"))
}

// Parsed once, for the inserts on every response.
static RATELIMIT: LazyLock<ParsedHeaderName> =
    LazyLock::new(|| ParsedHeaderName::new(RATELIMIT_NAME));
pub const RATELIMIT_NAME: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY_NAME: HeaderName = HeaderName::from_static("ratelimit-policy");
pub static X_REQUEST_ID_NAME: LazyLock<ParsedHeaderName> =
    LazyLock::new(|| ParsedHeaderName::new(X_REQUEST_ID));

/// `mask_errors`: turns an upstream 5xx into the gateway's generic JSON, keeping the status.
/// Returns the body that must replace the upstream's.
pub fn mask_upstream_error(header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<Bytes> {
    let body = error_json(
        "the application could not answer this request",
        ctx.request_id.as_str(),
        None,
    );
    for name in [
        http::header::CONTENT_ENCODING,
        http::header::TRANSFER_ENCODING,
        http::header::ETAG,
        http::header::LAST_MODIFIED,
        http::header::CONTENT_DISPOSITION,
        http::header::CONTENT_LANGUAGE,
        http::header::CONTENT_RANGE,
    ] {
        header.remove_header(&name);
    }
    header.insert_header(CONTENT_TYPE, "application/json")?;
    header.insert_header(CONTENT_LENGTH, body.len())?;
    header.insert_header(CACHE_CONTROL, "no-store")?;
    Ok(body)
}
