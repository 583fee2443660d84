//! The `ProxyHttp` implementation: each Pingora phase is a short list of policy calls in the
//! order documented in the README ("Policy order"). The order is part of the product.
//!
//! | phase | what happens here |
//! | --- | --- |
//! | `request_filter` | 1. request id, client IP, route match, HTTPS redirect, 404. 2. method allowlist (405). Any refusal is written by `respond.rs` and ends the request (`Ok(true)`). |
//! | `upstream_peer` | round-robin choice of an available server in the route's pool (503 when none). |
//! | `connected_to_upstream` / `fail_to_connect` | passive health; retry on another server for idempotent methods only, and only because the connect failed (nothing was sent). |
//! | `upstream_request_filter` | 6. `X-Forwarded-For`/`-Proto`/`-Host`, `X-Request-Id`. |
//! | `upstream_response_drop` | 7, early: the route's `upstream_drop`, the headers step 7 would remove, dropped as Pingora parses an HTTP/1.x upstream's response. |
//! | `response_filter` | 7. the response policies (`respond::finish_response`), the same ones gateway-made responses get (without the walks for what was dropped already). |
//! | `fail_to_proxy` | the gateway's JSON 502/503/504, without upstream addresses or error text. |
//! | `logging` | 8. metrics and the access log. |

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderName, HeaderValue, Method, Version};
use pingora_core::protocols::http::v1::client::ResponseFieldDrop;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::clock;
use crate::ctx::RequestCtx;
use crate::log::{AccessLog, AccessRecord, AuthEvent, NO_UPSTREAM};
use crate::metrics::Metrics;
use crate::policy::api_key::{self, AuthOutcome, Credential};
use crate::policy::body::{self, Declared};
use crate::policy::cors;
use crate::policy::forwarded;
use crate::policy::headers::{next_match, HeaderForm, HeaderLines};
use crate::policy::hygiene::{self, TooLarge};
use crate::policy::lockout::Recorded;
use crate::policy::rate_limit::{self, Decision, Event, RequestFacts, Verdict};
use crate::policy::schema::Mismatch;
use crate::respond::{finish_response_of, mask_upstream_error, GatewayResponse, X_REQUEST_ID};
use crate::router::request_host;
use crate::runtime::{Route, RouteAuth, Runtime};
use crate::snapshot::Snapshot;
use crate::upstream::now_ms;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What every request needs and what outlives a single config: the live runtime (swapped on
/// reload), metrics and the access log.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
}

pub struct Gateway {
    pub shared: Arc<Shared>,
}

impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    /// None. Pingora's default adds its response compression module, switched off, which
    /// still costs three allocations and an `Accept-Encoding` parse per request; the gateway
    /// compresses nothing.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.filter_request(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a route");
        };
        let pool = route.upstream();
        ctx.attempts += 1;
        // One clock read for the servers' health and the upstream's timing.
        let now = Instant::now();
        let Some(server) = pool.select(clock::ms_at(now)) else {
            ctx.pool = Some(pool);
            return Error::e_explain(ErrorType::HTTPStatus(503), "no available upstream server");
        };
        ctx.server = Some(server.addr);
        ctx.upstream_started = Some(now);
        let peer = server.peer();
        ctx.pool = Some(pool);
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(pool), Some(addr)) = (&ctx.pool, ctx.server) {
            if let Some(server) = pool.server_for(&addr) {
                server.health.record_connect_success();
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(pool) = ctx.pool.clone() else {
            return e;
        };
        if let Some(server) = ctx.server.and_then(|addr| pool.server_for(&addr)) {
            if server.health.record_connect_failure(
                pool.passive_failures,
                pool.passive_rest,
                now_ms(),
            ) {
                log::warn!(
                    "upstream {} server {} failed {} connects in a row; resting it",
                    pool.name,
                    server.label,
                    pool.passive_failures
                );
            }
        }
        self.shared
            .metrics
            .upstream_errors
            .with_label_values(&[pool.name.as_str(), error_kind(&e)])
            .inc();
        // Nothing reached the upstream, but a non-idempotent request is still never sent twice.
        let retry = session.req_header().method.is_idempotent() && ctx.attempts <= pool.retries;
        e.set_retry(retry);
        e
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // 5. A streamed body over the limit: the error aborts the upstream request (its body
        // is left unterminated, never passed off as complete) and the client gets 413. After
        // a protocol upgrade (WebSocket) the bytes are frames, not a body.
        if session.was_upgraded() {
            return Ok(());
        }
        if let Some(chunk) = body.as_ref() {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_seen > ctx.body_limit {
                *body = None;
                self.count_rejected(ctx, "body_too_large");
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over the route's limit",
                );
            }
        }
        // A body that must be signed or match a schema is held back until it is whole (it is
        // within the limit, counted above), then forwarded byte for byte, or the request is
        // aborted: the app never sees a body that failed.
        if ctx.webhook.is_some() || ctx.schema.is_some() {
            // An empty chunk, not `None`: Pingora reads `None` as the end of the body and
            // would finish the upstream request without it.
            if let Some(chunk) = body.replace(Bytes::new()) {
                ctx.held_body.extend_from_slice(&chunk);
            }
            if !end_of_stream {
                return Ok(());
            }
            if let Some(webhook) = ctx.webhook.take() {
                let checked = webhook.verify(
                    &session.req_header().headers,
                    &ctx.held_body,
                    api_key::unix_now(),
                );
                if let Err(failure) = self.count_webhook(ctx, checked) {
                    self.count_rejected(ctx, "webhook_signature");
                    ctx.webhook_failure = Some(failure);
                    return Error::e_explain(
                        ErrorType::HTTPStatus(401),
                        "webhook signature refused",
                    );
                }
            }
            match ctx.schema.clone() {
                None => *body = Some(Bytes::from(std::mem::take(&mut ctx.held_body))),
                Some(schema) => match schema.check(&ctx.held_body) {
                    Ok(()) => *body = Some(Bytes::from(std::mem::take(&mut ctx.held_body))),
                    Err(mismatches) => {
                        ctx.schema_mismatches = Some(mismatches);
                        self.count_rejected(ctx, "schema");
                        return Error::e_explain(
                            ErrorType::HTTPStatus(400),
                            "request body does not match the schema",
                        );
                    }
                },
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // 6. What the upstream is told about the client, and nothing the client made up.
        // One pass over the request's few headers, rather than a removal per listed name.
        while let Some(name) = next_match(&upstream.headers, |k| match forwarded::DROPPED.get(k) {
            Some(forwarded::Dropped::Always) => true,
            Some(forwarded::Dropped::Untrusted) => !ctx.peer_trusted,
            None => false,
        }) {
            upstream.remove_header(&name);
        }
        // The gateway's own headers, in one buffer of HTTP/1.1 lines (upstreams speak
        // HTTP/1.1): an insert into Pingora's two header maps costs hundreds of instructions
        // per header. The client's copies of these names went with `doomed`.
        let mut lines = HeaderLines::default();
        if let Some(client) = ctx.client_ip_text() {
            lines.push(b"x-real-ip", client.as_bytes())?;
        }
        let peer = ctx.client_ip().map(|_| peer_ip(session)).unwrap_or(None);
        if let Some(peer) = peer {
            let sent = || joined_forwarded_for(session);
            let value = forwarded::upstream_forwarded_for(peer, ctx.peer_trusted, sent);
            lines.push(b"x-forwarded-for", value.as_bytes())?;
        }
        let proto_from_proxy = ctx
            .peer_trusted
            .then(|| session.req_header().headers.get(&X_FORWARDED_PROTO))
            .flatten()
            .filter(|v| *v == "https" || *v == "http");
        let proto = match proto_from_proxy {
            Some(v) => v.as_bytes(),
            None if ctx.https => b"https",
            None => b"http",
        };
        lines.push(b"x-forwarded-proto", proto)?;
        let host_from_proxy = ctx
            .peer_trusted
            .then(|| session.req_header().headers.get(&X_FORWARDED_HOST))
            .flatten();
        match host_from_proxy {
            Some(v) => lines.push(b"x-forwarded-host", v.as_bytes())?,
            None => {
                if let Some(host) = raw_host(session.req_header()) {
                    lines.push(b"x-forwarded-host", host.as_bytes())?;
                }
            }
        }
        // An HTTP/2 request names its host in `:authority`; an HTTP/1.1 upstream needs `Host`.
        if upstream.headers.get(HOST).is_none() {
            if let Some(authority) = session.req_header().uri.authority() {
                upstream.insert_header(HOST, authority.as_str().to_string())?;
            }
        }
        lines.push(b"x-request-id", ctx.request_id.as_bytes())?;
        // The credential stays at the gateway; the upstream learns who it was instead.
        let auth = ctx.route.as_ref().and_then(|r| r.auth.as_ref());
        let mut strip_param = None;
        if let Some(auth) = auth {
            // Left out as the request is written, rather than removed from its two maps.
            match &auth.policy.credential {
                Credential::Header(name) => upstream.omit_header(name),
                Credential::Bearer => upstream.omit_header(&http::header::AUTHORIZATION),
                Credential::Query(name) => strip_param = Some(name.as_str()),
            }
            if let Some(entry) = ctx.key_entry() {
                // Who the key is, as lines made when the config was loaded.
                lines.push_trusted(&entry.upstream_lines);
            }
        }
        upstream.append_h1_lines_owned(lines.into_vec());
        let query = session.req_header().uri.query();
        let query_changes = strip_param.is_some() && query.is_some();
        if ctx.normalized_path.is_some() || query_changes {
            // The upstream gets the path the route was chosen by, without the credential.
            let path = ctx
                .normalized_path
                .as_deref()
                .unwrap_or_else(|| session.req_header().uri.path());
            let query = match (strip_param, query) {
                (Some(name), Some(q)) => api_key::strip_query_param(q, name).map(Cow::Owned),
                (_, q) => q.map(Cow::Borrowed),
            };
            let target = match query {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            };
            match target.parse::<http::Uri>() {
                Ok(uri) => upstream.set_uri(uri),
                Err(_) if query_changes => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "cannot rebuild the URL without the credential",
                    )
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn upstream_response_drop(&self, ctx: &RequestCtx) -> Option<ResponseFieldDrop> {
        // 7, early: the removals of the response policies, as Pingora parses the response.
        ctx.route.as_ref().map(|r| r.upstream_drop.0.clone())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // An HTTP/1.x upstream's response was parsed with `upstream_response_drop`'s answer.
        ctx.upstream_fields_dropped = ctx.route.is_some()
            && matches!(
                upstream_response.version,
                Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
            );
        if let (Some(started), Some(pool)) = (ctx.upstream_started, &ctx.pool) {
            pool.duration
                .get_or_init(|| {
                    self.shared
                        .metrics
                        .upstream_duration
                        .each(|vec| vec.with_label_values(&[pool.name.as_str()]))
                })
                .mine()
                .observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some(route), Some(client)) = (&ctx.route, ctx.client_ip()) {
            if let Some(lockout) = &route.lockout {
                let recorded = lockout.record(
                    &route.name,
                    client,
                    response.status.as_u16(),
                    clock::now_us(),
                );
                if let Recorded::Blocked(us) = recorded {
                    self.shared
                        .metrics
                        .lockouts
                        .with_label_values(&[lockout.name.as_str()])
                        .inc();
                    log::info!(
                        "lockout {}: {client} blocked on route {} for {}s",
                        lockout.name,
                        route.name,
                        us / 1_000_000
                    );
                }
            }
        }
        // 7. Error masking first (it replaces the body's headers), then the response policies:
        // the same function every gateway-made response goes through.
        // An empty body has nothing to leak, and Pingora gives no body to replace.
        let empty = response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            == Some(0);
        let mask = response.status.is_server_error()
            && !empty
            && ctx.header_policy().is_some_and(|p| p.mask_errors);
        if mask {
            let body = mask_upstream_error(response, ctx)?;
            ctx.masked = true;
            ctx.decision = "masked_error".into();
            // A HEAD response has no body to replace.
            if session.req_header().method != Method::HEAD {
                ctx.mask_body = Some(body);
            }
        }
        let dropped = std::mem::take(&mut ctx.upstream_fields_dropped);
        finish_response_of(response, ctx, dropped)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if !ctx.masked {
            return Ok(None);
        }
        if let Some(original) = body.take() {
            if log::log_enabled!(log::Level::Debug) && !original.is_empty() {
                let sample = &original[..original.len().min(256)];
                log::debug!(
                    "request {} masked upstream error body starting: {:?}",
                    ctx.request_id,
                    String::from_utf8_lossy(sample)
                );
            }
        }
        // The replacement goes out with the first chunk (or at the end for an empty body);
        // everything the upstream sends after it is dropped.
        if let Some(replacement) = ctx.mask_body.take() {
            *body = Some(replacement);
        } else if end_of_stream {
            *body = None;
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let response = match e.etype() {
            ErrorType::HTTPStatus(503) => Some(GatewayResponse::no_healthy_upstream()),
            ErrorType::HTTPStatus(413) => Some(GatewayResponse::payload_too_large(ctx.body_limit)),
            ErrorType::HTTPStatus(401) if ctx.webhook_failure.is_some() => {
                Some(GatewayResponse::webhook_refused(
                    ctx.webhook_failure
                        .map_or("webhook signature refused", |f| f.message()),
                ))
            }
            ErrorType::HTTPStatus(400) if ctx.schema_mismatches.is_some() => Some(
                GatewayResponse::schema_mismatch(ctx.schema_mismatches.take().unwrap_or_default()),
            ),
            ErrorType::HTTPStatus(_) => Some(GatewayResponse::bad_gateway()),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                Some(GatewayResponse::gateway_timeout())
            }
            _ => match e.esource() {
                ErrorSource::Upstream => Some(GatewayResponse::bad_gateway()),
                // The client went away or broke the protocol: nobody to answer, or a 400.
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                        None
                    }
                    _ => Some(GatewayResponse::bad_request(
                        "the request could not be read",
                    )),
                },
                ErrorSource::Internal | ErrorSource::Unset => {
                    Some(GatewayResponse::internal_error())
                }
            },
        };
        if e.esource() == &ErrorSource::Upstream {
            if let Some(pool) = &ctx.pool {
                if !matches!(
                    e.etype(),
                    ErrorType::ConnectTimedout
                        | ErrorType::ConnectRefused
                        | ErrorType::ConnectError
                ) {
                    // Connect failures were counted in fail_to_connect.
                    self.shared
                        .metrics
                        .upstream_errors
                        .with_label_values(&[pool.name.as_str(), error_kind(e)])
                        .inc();
                }
            }
        }
        let mut code = 0;
        // The connection is not reused after a failure: say so in the response.
        session.set_keepalive(None);
        if let Some(response) = response {
            code = response.status();
            if session.response_written().is_none() {
                if let Err(write_error) = response.send(session, ctx).await {
                    log::debug!("cannot send the error response: {write_error}");
                }
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own error log says about a request: never the query string (it carries
    /// tokens), but the request id that ties it to the access log.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!(
            "{} {} (request {})",
            req.method,
            req.uri.path(),
            ctx.request_id
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let metrics = &self.shared.metrics;
        if ctx.in_flight {
            metrics.requests_in_flight.mine().dec();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.gateway_status)
            .unwrap_or(0);
        let req = session.req_header();
        let elapsed = ctx.started.elapsed();
        if ctx.request_id.is_empty() {
            // The request never reached request_filter (it could not be read): still logged.
            ctx.request_id = forwarded::new_request_id();
        }
        let route = ctx.route_name();
        let series = ctx.series(&metrics.unrouted);
        series.record(metrics, route, &req.method, status, elapsed.as_secs_f64());
        let upstream = ctx.pool.as_ref().map_or(&NO_UPSTREAM, |p| &p.log_name);
        let record = AccessRecord {
            time: crate::log::rfc3339_now(),
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip_text().copied().unwrap_or_default(),
            method: req.method.as_str(),
            host: &ctx.host,
            path: req.uri.path(),
            status,
            bytes: session.body_bytes_sent(),
            duration_ms: crate::log::Millis::of(elapsed),
            route: ctx.route_log_name(),
            upstream,
            decision: &ctx.decision,
            key_id: ctx.key_log_id(),
        };
        if !self.shared.access_log.write_line(record.to_line()) {
            metrics.access_log_dropped.inc();
        }
    }
}

impl Gateway {
    /// `request_filter`: phase 1 and the guard (see the module table).
    async fn filter_request(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = Snapshot::current(&self.shared.runtime);
        ctx.runtime = Some(rt.clone());
        self.shared.metrics.requests_in_flight.mine().inc();
        ctx.in_flight = true;
        // Pingora's keep-alive is left as it granted it (off for a request that must close);
        // its length is not Pingora's to time: the wait for the next request is the
        // connection loop's `idle` timer and the next head's read is under `header_read`
        // (`background.rs`), so a Pingora timer on that read would only cost a registration.
        session.set_read_timeout(Some(rt.timeouts.body_read));

        // 1. Early: who is asking, which request this is, where it goes; and whether its head
        // is of a sane size, whatever route it would take.
        identify(session, ctx, &rt);
        if let Some(refusal) =
            smuggling_refusal(session).or_else(|| hygiene_refusal(session.req_header(), ctx, &rt))
        {
            self.count_rejected(ctx, refusal.reason());
            refusal.send(session, ctx).await?;
            return Ok(true);
        }
        if !ctx.https {
            if let Some(port) = rt.redirect_https {
                let response = match https_location(&ctx.host, port, session.req_header()) {
                    Some(location) => GatewayResponse::redirect_https(location),
                    None => GatewayResponse::bad_request("missing or invalid Host header"),
                };
                response.send(session, ctx).await?;
                return Ok(true);
            }
        }
        let path = ctx
            .normalized_path
            .as_deref()
            .unwrap_or_else(|| session.req_header().uri.path());
        if let Some(fixed) = rt.statics.find(&ctx.host, path) {
            let method = &session.req_header().method;
            let response = if method == Method::GET || method == Method::HEAD {
                GatewayResponse::fixed(fixed.content_type.clone(), fixed.body.clone())
            } else {
                GatewayResponse::method_not_allowed(HeaderValue::from_static("GET, HEAD"))
            };
            response.send(session, ctx).await?;
            return Ok(true);
        }
        let route = rt
            .router
            .find_index(&ctx.host, path)
            .and_then(|index| rt.route(index));
        let Some(route) = route else {
            GatewayResponse::not_found().send(session, ctx).await?;
            return Ok(true);
        };
        ctx.route = Some(route.clone());

        let body_empty = session.is_body_empty();
        if let Some(refusal) = self.guard(session, body_empty, ctx, &route).await {
            refusal.send(session, ctx).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `gateway_requests_rejected_total{route, reason}`.
    fn count_rejected(&self, ctx: &RequestCtx, reason: &'static str) {
        let metrics = &self.shared.metrics;
        ctx.series(&metrics.unrouted)
            .reject(metrics, ctx.route_name(), reason);
    }

    /// Checks the request's API key: the metric, the audit event, and a refusal when it fails.
    /// A refusal also counts towards the route's lockout, so guessing keys gets a client
    /// blocked.
    fn authenticate(
        &self,
        req: &RequestHeader,
        ctx: &mut RequestCtx,
        route: &Route,
        auth: &RouteAuth,
    ) -> Option<GatewayResponse> {
        let policy = &auth.policy;
        let outcome = policy.authenticate_at(
            &req.headers,
            req.uri.query(),
            &auth.roles,
            api_key::unix_now,
        );
        let entry = outcome.entry();
        let set = entry.map_or("none", |e| e.set.label());
        let result = outcome.result();
        policy.counted.inc(
            outcome.metric_slot(),
            &self.shared.metrics.api_key_auth,
            &[policy.name.as_str(), set, result],
        );
        let accepted = matches!(outcome, AuthOutcome::Accepted(_));
        if !accepted || policy.log_success {
            let event = AuthEvent {
                time: crate::log::rfc3339_now(),
                event: "auth",
                level: if accepted { "info" } else { "warn" },
                request_id: ctx.request_id.as_str(),
                client_ip: ctx.client_ip_text().copied().unwrap_or_default(),
                route: &route.name,
                policy: &policy.name,
                result,
                key_id: entry.map_or("unknown", |e| &*e.id),
                set,
            };
            if !self.shared.access_log.write(&event) {
                self.shared.metrics.access_log_dropped.inc();
            }
        }
        let refusal = match outcome {
            AuthOutcome::Accepted(entry) => {
                ctx.key = Some(entry.index);
                return None;
            }
            AuthOutcome::Missing => {
                GatewayResponse::unauthorized(policy.challenge.clone(), "an API key is required")
            }
            AuthOutcome::Invalid => {
                GatewayResponse::unauthorized(policy.challenge.clone(), "the API key is not valid")
            }
            AuthOutcome::Expired(_) => {
                GatewayResponse::unauthorized(policy.challenge.clone(), "the API key has expired")
            }
            AuthOutcome::Forbidden(_) => GatewayResponse::forbidden_role(),
        };
        if let (Some(lockout), Some(client)) = (&route.lockout, ctx.client_ip()) {
            lockout.record(&route.name, client, refusal.status(), clock::now_us());
        }
        Some(refusal)
    }

    /// Counts a webhook check; passes its result through. (A refusal is counted as rejected
    /// where it is answered: by `guard`, or in `request_body_filter`.)
    fn count_webhook(
        &self,
        ctx: &RequestCtx,
        checked: std::result::Result<(), crate::policy::webhook::Failure>,
    ) -> std::result::Result<(), crate::policy::webhook::Failure> {
        let (slot, result) = match checked {
            Ok(()) => (0, "ok"),
            Err(f) => (f as usize + 1, f.label()),
        };
        let metrics = &self.shared.metrics;
        ctx.series(&metrics.unrouted)
            .webhook(metrics, ctx.route_name(), slot, result);
        checked
    }

    /// Steps 2 to 5 of the policy order for a matched route. `Some(response)` when the request
    /// is refused; what it refused for is counted in `gateway_requests_rejected_total`.
    async fn guard(
        &self,
        session: &Session,
        body_empty: bool,
        ctx: &mut RequestCtx,
        route: &Route,
    ) -> Option<GatewayResponse> {
        let refusal = self.guard_steps(session, body_empty, ctx, route).await?;
        if !refusal.is_refusal() {
            return Some(refusal);
        }
        self.count_rejected(ctx, refusal.reason());
        Some(refusal)
    }

    async fn guard_steps(
        &self,
        session: &Session,
        body_empty: bool,
        ctx: &mut RequestCtx,
        route: &Route,
    ) -> Option<GatewayResponse> {
        let req = session.req_header();
        // 2. Access: the client's address, then (after a CORS preflight, which is not the
        // request itself) the method allowlist.
        if let (Some(rules), Some(client)) = (&route.ip_rules, ctx.client_ip()) {
            if !rules.allows(client) {
                return Some(GatewayResponse::ip_denied());
            }
        }
        // 3. CORS preflight: answered here, never forwarded, before anything keyed on identity.
        if let (Some(cors), Some(origin)) = (&route.cors, &ctx.origin) {
            if req.method == Method::OPTIONS && req.headers.contains_key(&cors::ACRM) {
                return Some(match cors.preflight(origin, &req.headers) {
                    Ok(headers) => GatewayResponse::preflight(headers),
                    Err(cors::Refusal::Origin) => {
                        GatewayResponse::cors_refused("this origin is not allowed")
                    }
                    Err(cors::Refusal::Method) => {
                        GatewayResponse::cors_refused("this method is not allowed cross-origin")
                    }
                    Err(cors::Refusal::Header(_)) => GatewayResponse::cors_refused(
                        "a requested header is not allowed cross-origin",
                    ),
                });
            }
        }
        match &route.methods {
            Some(methods) if !methods.allows(&req.method) => {
                return Some(GatewayResponse::method_not_allowed(methods.allow.clone()));
            }
            Some(_) => {}
            // A route that lists no methods still refuses TRACE, as nginx does: it echoes the
            // request back, cookies and credentials included (cross-site tracing), and no
            // app behind a gateway needs it. A route that wants it lists it.
            None if req.method == Method::TRACE => {
                return Some(GatewayResponse::method_not_allowed(
                    HeaderValue::from_static(ANY_BUT_TRACE),
                ));
            }
            None => {}
        }

        // 4. A client locked out after failures is refused before it costs anything; then the
        // in-flight cap, then the rate limits (a request refused earlier is charged to none).
        if let (Some(lockout), Some(client)) = (&route.lockout, ctx.client_ip()) {
            if let Some(left_us) = lockout.blocked(&route.name, client, clock::now_us()) {
                return Some(GatewayResponse::too_many(
                    "too many failed attempts; try again later",
                    lockout.decision.clone(),
                    "locked_out",
                    left_us.div_ceil(1_000_000),
                ));
            }
        }
        if let (Some((max, table)), Some(client)) = (&route.in_flight, ctx.client_ip()) {
            match table.try_acquire(client, *max) {
                Some(place) => ctx.in_flight_place = Some(place),
                None => {
                    return Some(GatewayResponse::too_many(
                        "too many requests in flight",
                        "max_in_flight",
                        "max_in_flight",
                        1,
                    ))
                }
            }
        }
        // Limits on who the client is (address, global) come before auth, so guessing keys
        // costs quota; limits per key come after it.
        let mut outcomes = rate_limit::Allowed::new();
        if !route.rate_limits.is_empty() {
            let refusal = self
                .rate_limit(session, ctx, route, &route.rate_limits, &mut outcomes)
                .await;
            if refusal.is_some() {
                return refusal;
            }
        }
        if let Some(auth) = &route.auth {
            if let Some(refusal) = self.authenticate(req, ctx, route, auth) {
                return Some(refusal);
            }
            if !route.identity_rate_limits.is_empty() {
                let refusal = self
                    .rate_limit(
                        session,
                        ctx,
                        route,
                        &route.identity_rate_limits,
                        &mut outcomes,
                    )
                    .await;
                if refusal.is_some() {
                    return refusal;
                }
            }
        }
        if !outcomes.is_empty() {
            ctx.rate_limit = rate_limit::allowed_header(&outcomes);
        }

        // 5. Body: a declared length over the limit is refused before any upstream is chosen;
        // a streamed body is counted in request_body_filter.
        let has_body = match body::declared(&req.headers, session.is_http2(), body_empty) {
            Declared::Invalid => return Some(GatewayResponse::bad_request(
                "invalid body framing: one numeric Content-Length, never with Transfer-Encoding",
            )),
            Declared::Length(n) if n > route.max_body => {
                return Some(GatewayResponse::payload_too_large(route.max_body))
            }
            Declared::None => false,
            Declared::Length(_) | Declared::Streamed => true,
        };
        ctx.body_limit = route.max_body;
        if let Some(types) = &route.content_types {
            if has_body && !types.allows(req.headers.get(http::header::CONTENT_TYPE)) {
                return Some(GatewayResponse::unsupported_media_type());
            }
        }
        if let Some(webhook) = &route.webhook {
            if has_body {
                ctx.webhook = Some(webhook.clone());
            } else {
                let checked = webhook.verify(&req.headers, b"", api_key::unix_now());
                if let Err(failure) = self.count_webhook(ctx, checked) {
                    return Some(GatewayResponse::webhook_refused(failure.message()));
                }
            }
        }
        if let Some(schema) = &route.schema {
            if has_body {
                ctx.schema = Some(schema.clone());
            } else if matches!(req.method, Method::POST | Method::PUT | Method::PATCH) {
                return Some(GatewayResponse::schema_mismatch(vec![Mismatch {
                    pointer: String::new(),
                    message: "a JSON body is required".into(),
                }]));
            }
        }
        None
    }

    /// Runs the route's rate limits. `Some(response)` when the request is refused.
    async fn rate_limit<'r>(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        route: &Route,
        policies: &'r [Arc<rate_limit::RateLimitPolicy>],
        outcomes: &mut rate_limit::Allowed<'r>,
    ) -> Option<GatewayResponse> {
        let metrics = &self.shared.metrics;
        let facts = RequestFacts {
            client_ip: ctx.client_ip(),
            route: &route.name,
            headers: &session.req_header().headers,
            key_id: ctx.key_id(),
        };
        let start = outcomes.len();
        // The request's arrival is its time for the limits (no second clock read).
        let now = clock::us_at(ctx.started);
        // In-process limits are decided without the store's future.
        let verdict = if rate_limit::all_local(policies) {
            rate_limit::check_all_local(policies, &facts, now, outcomes)
        } else {
            let mut events = Vec::new();
            let verdict = rate_limit::check_all(policies, &facts, now, &mut events, outcomes).await;
            for event in events {
                match event {
                    Event::StoreError => metrics
                        .rate_limit_store_errors
                        .with_label_values(&["redis"])
                        .inc(),
                }
            }
            verdict
        };
        let decisions = &metrics.rate_limit_decisions;
        match verdict {
            Verdict::Allowed => {
                for (policy, _) in &outcomes[start..] {
                    policy.count(decisions, Decision::Allowed);
                }
                None
            }
            Verdict::Limited(policy, outcome) => {
                policy.count(decisions, Decision::Limited);
                Some(GatewayResponse::rate_limited(policy, &outcome))
            }
            Verdict::MissingKey(policy, header) => {
                policy.count(decisions, Decision::MissingKey);
                Some(GatewayResponse::missing_rate_limit_key(policy, &header))
            }
            Verdict::Unavailable(policy) => {
                policy.count(decisions, Decision::Unavailable);
                Some(GatewayResponse::rate_limit_unavailable(policy))
            }
        }
    }
}

/// The `Allow` of a route that lists no methods, answering TRACE.
const ANY_BUT_TRACE: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// A request with both `Content-Length` and `Transfer-Encoding`: Pingora would frame it by the
/// latter and close the connection afterwards; it is refused outright instead, since a
/// request written that way is an attempt to make two servers disagree on where it ends.
fn smuggling_refusal(session: &Session) -> Option<GatewayResponse> {
    let req = session.req_header();
    if !req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return None;
    }
    let both = req.headers.contains_key(http::header::CONTENT_LENGTH)
        || session
            .as_downstream()
            .as_http1()
            .is_some_and(|h1| hygiene::raw_head_has_content_length(&h1.get_headers_raw_bytes()));
    both.then(GatewayResponse::smuggling)
}

/// Hygiene before routing: the size of the request head, and the path normalised (kept in
/// `ctx` when it changed, so routing and the upstream see the same path).
fn hygiene_refusal(
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    rt: &Runtime,
) -> Option<GatewayResponse> {
    if let Err(too_large) = rt.head_limits.check(req) {
        return Some(match too_large {
            TooLarge::Uri => GatewayResponse::uri_too_long(),
            TooLarge::Headers => GatewayResponse::header_too_large(),
        });
    }
    if let Some(reason) = ctx.host_refusal {
        return Some(GatewayResponse::bad_request(reason));
    }
    match hygiene::normalize_path(req.uri.path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(normalized)) => {
            ctx.normalized_path = Some(normalized);
            None
        }
        Err(reason) => Some(GatewayResponse::bad_path(reason)),
    }
}

/// Fills in the request id, client IP, scheme and host.
fn identify(session: &Session, ctx: &mut RequestCtx, rt: &Runtime) {
    ctx.https = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some();
    ctx.header_form = if session.is_http2() {
        HeaderForm::H2
    } else {
        HeaderForm::H1Lines
    };
    let req = session.req_header();
    if let Some(peer) = peer_ip(session) {
        ctx.peer_trusted = rt.trusted_proxies.contains(peer);
        let chain = req.headers.get_all(&X_FORWARDED_FOR).iter();
        ctx.set_client_ip(forwarded::client_ip(peer, chain, &rt.trusted_proxies));
    }
    // Behind a load balancer that terminates TLS (a trusted proxy saying https), the request
    // is HTTPS for HSTS, cookie flags and the redirect.
    ctx.https |= ctx.peer_trusted
        && req
            .headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    ctx.request_id = forwarded::request_id(req.headers.get(&X_REQUEST_ID), ctx.peer_trusted);
    // The host routes the request and goes upstream in `X-Forwarded-Host`. An HTTP/1.1
    // request without `Host` is answered 400, whatever its target, as is one whose `Host` is
    // not valid (RFC 9112 §3.2); an HTTP/2 one names its authority in `:authority` or `Host`
    // (RFC 9113 §8.3.1). A request that named none would take whichever route matches any
    // host. HTTP/1.0 may leave it out.
    match named_host(req).map(|raw| raw.and_then(request_host)) {
        Some(Some(host)) => ctx.host = host,
        Some(None) => {
            ctx.host_refusal = Some("invalid Host header: not a host name or address");
        }
        None if !matches!(req.version, Version::HTTP_09 | Version::HTTP_10) => {
            ctx.host_refusal = Some("missing Host header: an HTTP/1.1 request must name its host");
        }
        None => {}
    }
    ctx.origin = req.headers.get(http::header::ORIGIN).cloned();
}

fn peer_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The host the client named: the URI authority (HTTP/2, absolute-form) or the `Host` header.
fn raw_host(req: &RequestHeader) -> Option<&str> {
    named_host(req).flatten()
}

/// Where the client named a host, as [`raw_host`]: `None` when it named none, `Some(None)`
/// when its `Host` is not text.
fn named_host(req: &RequestHeader) -> Option<Option<&str>> {
    req.uri
        .authority()
        .map(|a| Some(a.as_str()))
        .or_else(|| req.headers.get(HOST).map(|h| h.to_str().ok()))
}

fn joined_forwarded_for(session: &Session) -> Option<String> {
    let values: Vec<&str> = session
        .req_header()
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The https URL for this request, or `None` when the host is not a plain host name.
fn https_location(host: &str, port: u16, req: &RequestHeader) -> Option<String> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':'));
    if !valid {
        return None;
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Some(if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    })
}

/// A bounded label for what went wrong with an upstream.
fn error_kind(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectError | ErrorType::ConnectNoRoute => "connect_error",
        ErrorType::TLSHandshakeFailure
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::InvalidCert => "tls",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        ErrorType::ConnectionClosed => "closed",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(req: &RequestHeader) -> String {
        let mut buf = Vec::new();
        req.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    /// The credential header is omitted from the upstream's copy rather than removed (see
    /// `upstream_request_filter`): every form the vendored pingora-http sends a request in
    /// must leave all its fields out, whatever their spelling, and keep the rest in order.
    #[test]
    fn an_omitted_header_is_left_out_of_every_form_of_the_request() {
        let fields = [
            ("Host", "app"),
            ("X-API-Key", "secret-1"),
            ("Accept", "*/*"),
            ("x-api-KEY", "secret-2"),
            ("Authorization", "Bearer t"),
        ];
        for with_case in [true, false] {
            let build = |fields: &mut dyn Iterator<Item = &(&str, &str)>| {
                let mut req = if with_case {
                    RequestHeader::build("GET", b"/", None).unwrap()
                } else {
                    RequestHeader::build_no_case("GET", b"/", None).unwrap()
                };
                for (name, value) in fields {
                    req.append_header(name.to_string(), *value).unwrap();
                }
                req
            };
            let mut req = build(&mut fields.iter());
            let removed = build(&mut fields.iter().filter(|(_, v)| !v.starts_with("secret")));
            let key = HeaderName::from_static("x-api-key");
            req.omit_header(&key);
            let req = req.clone();
            assert_eq!(req.omitted_header(), Some(&key), "a clone omits it too");
            let wire = h1(&req);
            assert!(!wire.contains("secret"), "{wire}");
            assert_eq!(wire, h1(&removed));
            if with_case {
                assert_eq!(
                    wire,
                    "Host: app\r\nAccept: */*\r\nAuthorization: Bearer t\r\n"
                );
            }
            assert!(!req.as_owned_parts().headers.contains_key(&key));
            let mut mapped = Vec::new();
            req.map(|_, value| {
                mapped.push(value.clone());
                Ok(())
            })
            .unwrap();
            assert_eq!(mapped, ["app", "*/*", "Bearer t"]);
            assert!(req
                .case_header_iter()
                .all(|(_, v)| !v.as_bytes().starts_with(b"secret")));
            assert!(!http::request::Parts::from(req.clone())
                .headers
                .contains_key(&key));

            // Omitting a second name removes the first for real.
            let mut req = req;
            req.omit_header(&http::header::AUTHORIZATION);
            assert!(!req.headers.contains_key(&key));
            let mut removed = removed;
            removed.remove_header(&http::header::AUTHORIZATION);
            assert_eq!(h1(&req), h1(&removed));
        }
    }
}
