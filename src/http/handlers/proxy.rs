//! Proxy mode's catch-all: every request on a proxy-mode application's host that is not an
//! outpost endpoint. The session is checked as for a forward-auth check (cookie, then
//! `Authorization`), the pure `decide` judges, and an allowed request is sent on to the
//! upstream with the identity headers, its body streamed both ways; a protocol switch
//! (WebSocket) is bridged byte for byte. Which headers cross is `core::upstream`'s rule.

use std::sync::Arc;

use http::header::{AUTHORIZATION, HeaderMap};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use url::Url;

use super::auth::{check_session, prepare};
use super::{Ctx, forbidden};
use crate::core::decide::{Decision, SessionCheck, decide};
use crate::core::identity_headers::Prepared;
use crate::core::login::binding_cookie_name;
use crate::core::paths::START_PATH;
use crate::core::request::{AuthRequest, request_host};
use crate::core::session::{
    Session, clear_session_cookies, read_session_cookies, session_set_cookies,
};
use crate::core::token::unix_now;
use crate::core::upstream::{
    Forwarding, ak_proxy_text, downstream_headers, upstream_headers, wants_upgrade,
};
use crate::http::respond::{self, Body};
use crate::state::application::Application;
use crate::state::upstream::{ProxyTo, UpstreamError};

/// Answers a proxy-mode request: forwarded (with or without identity), a login redirect, or
/// a page.
pub(super) async fn proxy(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    parts: Parts,
    body: Body,
) -> Response<Body> {
    let name = app.spec.name.as_str();
    let Some(to) = app.upstream.as_ref() else {
        // Sources build an upstream for every proxy-mode app; fail closed if one did not.
        let r = respond::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Misconfigured",
            "This application has no upstream configured.",
        );
        return ctx.logged(r, name, "misconfigured", "");
    };
    if parts.method == Method::CONNECT {
        // A tunnel to wherever the client names is not the application.
        let r = respond::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        return ctx.logged(r, name, "bad_request", "");
    }
    let cookies = read_session_cookies(&parts.headers, &app.cookie_name);
    let now = unix_now();
    let check = check_session(ctx, app, &parts.headers, &cookies, now).await;
    let decision = {
        let req = AuthRequest::proxied(&parts, ctx.trusted, ctx.tls);
        decide(&req, &check, &app.spec, now)
    };
    let cookie_invalid = matches!(check, SessionCheck::Invalid);
    let chunks_sent = cookies.chunks_sent;
    let mut resp = match (decision, check) {
        (
            Decision::Allow,
            SessionCheck::Valid {
                session,
                renewed,
                prepared,
            },
        ) => {
            let signed_in = SignedIn {
                session,
                renewed,
                prepared,
                chunks_sent,
            };
            return allowed(ctx, app, to, parts, body, signed_in, now).await;
        }
        (Decision::Anonymous, _) => {
            let sent = Sent {
                identity: None,
                ak_proxy: None,
                drop_authorization: false,
            };
            forward(ctx, app, to, parts, body, &sent).await
        }
        (Decision::Login, _) => login(app, &parts),
        (Decision::Forbidden, SessionCheck::Valid { session, .. }) => {
            return forbidden(ctx, app, &session.identity.username);
        }
        (Decision::Allow | Decision::Forbidden, _) => respond::unauthorized(),
        (Decision::Unavailable, _) => respond::unavailable(
            &app.oidc
                .not_ready_reason()
                .unwrap_or_else(|| "provider error".into()),
        ),
        (Decision::Misconfigured, _) => respond::error_page(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            "The request URL cannot be read.",
        ),
    };
    if cookie_invalid {
        respond::add_cookies(&mut resp, clear_session_cookies(app, chunks_sent));
    }
    ctx.logged(resp, name, outcome(decision), "")
}

/// A live session's request, as the check found it.
struct SignedIn {
    session: Arc<Session>,
    renewed: bool,
    prepared: Option<Arc<Prepared>>,
    chunks_sent: usize,
}

/// Forwards a signed-in user's request with their identity, storing the session again when
/// it was renewed (or made from an `Authorization` header).
async fn allowed(
    ctx: &Ctx<'_>,
    app: &Application,
    to: &ProxyTo,
    parts: Parts,
    body: Body,
    s: SignedIn,
    now: i64,
) -> Response<Body> {
    let prepared = s
        .prepared
        .unwrap_or_else(|| Arc::new(prepare(ctx.rt, app, &s.session, None)));
    // Header authentication consumed the client's `Authorization`; a cookie did not.
    let consumed = s.renewed && prepared.with_cookies.is_some();
    let sent = Sent {
        identity: Some(&prepared.headers),
        ak_proxy: s.session.identity.ak_proxy.as_ref(),
        drop_authorization: consumed,
    };
    let mut r = forward(ctx, app, to, parts, body, &sent).await;
    if s.renewed {
        let cookies = session_set_cookies(app, &s.session, now, s.chunks_sent);
        respond::add_cookies(&mut r, cookies);
    }
    let user = &s.session.identity.username;
    ctx.logged(r, &app.spec.name, "proxied", user)
}

fn outcome(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow | Decision::Anonymous => "proxied",
        Decision::Login => "unauthenticated",
        Decision::Forbidden => "forbidden",
        Decision::Unavailable => "unavailable",
        Decision::Misconfigured => "bad_request",
    }
}

/// Not authenticated: a 401 page for a client that sent credentials (with
/// `intercept_header_auth`), else `302` to the application's own `/start` with the page to
/// return to (the external host joined with the request's path and query).
fn login(app: &Application, parts: &Parts) -> Response<Body> {
    if app.extras.intercept_header_auth && parts.headers.contains_key(AUTHORIZATION) {
        return respond::error_page(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated",
            "Due to 'Receive header authentication' being set, no redirect is performed.",
        );
    }
    respond::redirect(start_url(&app.spec.external_host, &parts.uri).as_str())
}

/// `<external_host>/outpost.goauthentik.io/start?rd=<external_host + path?query>`: both under
/// the external host's own path, which a request path is joined to unless it already starts
/// with it (a request that reached the outpost unstripped).
pub fn start_url(external: &Url, uri: &http::Uri) -> Url {
    let base = external.path().trim_end_matches('/');
    let path = uri.path();
    let under_base = !base.is_empty()
        && path
            .strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    let joined = if under_base {
        collapse_slashes(path)
    } else {
        collapse_slashes(&format!("{base}/{path}"))
    };
    let mut rd = external.clone();
    rd.set_path(&joined);
    rd.set_query(uri.query());
    let mut start = external.clone();
    start.set_path(&format!("{base}{START_PATH}"));
    start.set_query(None);
    start.query_pairs_mut().append_pair("rd", rd.as_str());
    start
}

fn collapse_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// What goes upstream besides the client's request.
struct Sent<'a> {
    identity: Option<&'a HeaderMap>,
    ak_proxy: Option<&'a Value>,
    drop_authorization: bool,
}

/// Sends the request on and streams the answer back; a `101` answer bridges the two
/// connections. Upstream failures become 502/504 pages.
async fn forward(
    ctx: &Ctx<'_>,
    app: &Application,
    to: &ProxyTo,
    mut parts: Parts,
    body: Body,
    sent: &Sent<'_>,
) -> Response<Body> {
    let upstream = &to.client;
    let upgrade = wants_upgrade(&parts.headers);
    let client_upgrade = upgrade
        .then(|| parts.extensions.remove::<OnUpgrade>())
        .flatten();
    let over = ak_proxy_text(sent.ak_proxy, "backend_override");
    let Some(uri) = upstream.spec.target(over, parts.uri.path_and_query()) else {
        return bad_gateway(sent.ak_proxy, "no usable upstream address");
    };
    let host = request_host(&parts, false, None)
        .unwrap_or_default()
        .to_string();
    let binding = binding_cookie_name(&app.cookie_name);
    let f = Forwarding {
        peer: ctx.peer.ip(),
        trusted: ctx.trusted,
        tls: ctx.tls,
        host: &host,
        host_override: ak_proxy_text(sent.ak_proxy, "host_header")
            .or(upstream.spec.host_header.as_deref()),
        cookie_prefix: &app.cookie_name,
        binding_cookie: &binding,
        drop_authorization: sent.drop_authorization,
        upgrade: client_upgrade.is_some(),
    };
    let mut headers = std::mem::take(&mut parts.headers);
    upstream_headers(&mut headers, sent.identity, &f);
    let method = parts.method.clone();
    let mut req = Request::new(body);
    *req.method_mut() = parts.method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    let started = std::time::Instant::now();
    let answer = upstream.send(req).await;
    if answer.is_ok() {
        to.metrics.observe(&method, started.elapsed());
    }
    match answer {
        Ok(mut resp) => {
            let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            if switching {
                let Some(client) = client_upgrade else {
                    return bad_gateway(sent.ak_proxy, "the upstream switched protocols unasked");
                };
                let server = hyper::upgrade::on(&mut resp);
                tokio::spawn(bridge(client, server));
            }
            let (mut head, body) = resp.into_parts();
            downstream_headers(&mut head.headers, switching);
            let body = if switching {
                Body::empty()
            } else {
                Body::Stream(body)
            };
            Response::from_parts(head, body)
        }
        Err(e @ UpstreamError::Timeout(_)) => {
            tracing::warn!(app = %app.spec.name, error = %e, "upstream timed out");
            respond::error_page(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway Timeout",
                "The application did not answer in time.",
            )
        }
        Err(e) => {
            tracing::warn!(app = %app.spec.name, error = %e, "upstream request failed");
            bad_gateway(sent.ak_proxy, &e.to_string())
        }
    }
}

/// `502`: the error itself only for superusers (as authentik does), a plain message for others.
fn bad_gateway(ak_proxy: Option<&Value>, error: &str) -> Response<Body> {
    let superuser = ak_proxy
        .and_then(|a| a.get("is_superuser"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let message = if superuser {
        format!("Error proxying to upstream server: {error}")
    } else {
        "Failed to connect to backend.".to_string()
    };
    respond::error_page(StatusCode::BAD_GATEWAY, "Bad Gateway", &message)
}

/// Copies bytes both ways between the client's and the upstream's switched connections until
/// either side closes.
async fn bridge(client: OnUpgrade, server: OnUpgrade) {
    let (client, server) = match tokio::try_join!(client, server) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "protocol switch failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut server = TokioIo::new(server);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "switched connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// authentik's `TestProxy_Redirect` and `TestProxy_Redirect_Subdirectory`.
    #[test]
    fn start_urls() {
        let cases = [
            (
                "https://ext.t.goauthentik.io",
                "/foo",
                "https://ext.t.goauthentik.io/outpost.goauthentik.io/start?rd=https%3A%2F%2Fext.t.goauthentik.io%2Ffoo",
            ),
            (
                "https://ext.t.goauthentik.io/subdir",
                "/foo",
                "https://ext.t.goauthentik.io/subdir/outpost.goauthentik.io/start?rd=https%3A%2F%2Fext.t.goauthentik.io%2Fsubdir%2Ffoo",
            ),
            (
                "https://ext.t.goauthentik.io/subdir",
                "/subdir/foo",
                "https://ext.t.goauthentik.io/subdir/outpost.goauthentik.io/start?rd=https%3A%2F%2Fext.t.goauthentik.io%2Fsubdir%2Ffoo",
            ),
            (
                "https://ext.t.goauthentik.io/subdir",
                "/subdirectory",
                "https://ext.t.goauthentik.io/subdir/outpost.goauthentik.io/start?rd=https%3A%2F%2Fext.t.goauthentik.io%2Fsubdir%2Fsubdirectory",
            ),
            (
                "https://app.example:8443/",
                "//a//b?x=1&y=%2F",
                "https://app.example:8443/outpost.goauthentik.io/start?rd=https%3A%2F%2Fapp.example%3A8443%2Fa%2Fb%3Fx%3D1%26y%3D%252F",
            ),
        ];
        for (ext, uri, want) in cases {
            let ext = Url::parse(ext).unwrap();
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(start_url(&ext, &uri).as_str(), want, "{ext} {uri}");
        }
    }
}
