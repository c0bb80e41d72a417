//! Endpoint handlers. Each one parses its input, does the I/O it needs (session check, token
//! calls), and hands the outcome to `respond`; the forward-auth verdict itself comes from the
//! pure `decide`. Handlers never read raw forwarding headers (the edge parsed them) and never
//! build configurations. Proxy mode's catch-all (`proxy`) is one more handler: the same
//! session check, then the request forwarded instead of answered.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::request::Parts;
use http::{Response, StatusCode};

use crate::core::app::Mode;
use crate::core::paths::{CALLBACK_SIGNATURE, Flavour, LOGOUT_SIGNATURE, Route};
use crate::core::request::{AuthRequest, request_host};
use crate::http::respond::{self, Body};
use crate::state::application::Application;
use crate::state::metrics::HostMetrics;
use crate::state::outpost::{Outpost, Runtime};

mod auth;
mod login;
mod proxy;
mod sign_out;

use auth::{auth, auth_now};
use login::{callback, start};
use proxy::proxy;
use sign_out::sign_out;

/// What the request log line reports, attached to the response as an extension.
#[derive(Debug, Clone, Default)]
pub struct LogInfo {
    pub app: String,
    pub outcome: &'static str,
    pub user: String,
}

/// Per-request context.
struct Ctx<'a> {
    outpost: &'a Outpost,
    rt: &'a Runtime,
    /// Whether the request line will be logged (so [`LogInfo`] is worth building).
    log: bool,
    /// The TCP peer.
    peer: SocketAddr,
    /// The peer is a trusted proxy.
    trusted: bool,
    /// The connection is TLS.
    tls: bool,
}

impl<'a> Ctx<'a> {
    fn new(outpost: &'a Outpost, rt: &'a Runtime, conn: Conn, trusted: bool) -> Ctx<'a> {
        Ctx {
            outpost,
            rt,
            log: rt.settings.log_requests
                || tracing::enabled!(target: "ak_outpost::http::server", tracing::Level::DEBUG),
            peer: conn.peer,
            trusted,
            tls: conn.tls,
        }
    }

    /// [`with_log`] when the request line will be logged; forward-auth checks skip the
    /// allocation otherwise.
    fn logged(
        &self,
        r: Response<Body>,
        app: &str,
        outcome: &'static str,
        user: &str,
    ) -> Response<Body> {
        if self.log {
            with_log(r, app, outcome, user)
        } else {
            r
        }
    }
}

/// The connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// How [`handle`] answers a request: at once (everything it needed was at hand: the
/// endpoints without I/O, and a check whose session the memo and the provider's caches know),
/// or with a future for the rest. Either way with the histograms of the application it was
/// for, once known.
pub enum Handled<F> {
    Now(Response<Body>, Option<&'static HostMetrics>),
    Later(F),
}

/// The part of a request [`handle`] could not answer at once.
pub type Rest =
    Pin<Box<dyn Future<Output = (Response<Body>, Option<&'static HostMetrics>)> + Send>>;

impl<F> Handled<F>
where
    F: Future<Output = (Response<Body>, Option<&'static HostMetrics>)>,
{
    /// The answer, however it comes.
    pub async fn answer(self) -> (Response<Body>, Option<&'static HostMetrics>) {
        match self {
            Handled::Now(resp, metrics) => (resp, metrics),
            Handled::Later(rest) => rest.await,
        }
    }
}

/// Answers one request on the outpost listener (HTTP or HTTPS). The body is used only in
/// proxy mode (streamed to the upstream); every other endpoint drops it unread.
///
/// What needs no waiting is answered before any future is made. The rest is a boxed future:
/// hyper moves the future of every request a few times, and a repeated check (the hot path)
/// would otherwise pay for moving one of the size the other endpoints need (over 1 KB). The
/// future is an `async move` block, not an `async fn`, which would hold its arguments twice
/// (as given, and moved into its body).
pub fn handle(outpost: Arc<Outpost>, parts: Parts, body: Body, conn: Conn) -> Handled<Rest> {
    let rt = outpost.runtime();
    let route = Route::from_path(parts.uri.path());
    let (app, trusted) = match admit(&outpost, &rt, route, &parts, conn.peer) {
        Admission::Admitted(app, trusted, req) => {
            let ctx = Ctx::new(&outpost, &rt, conn, trusted);
            if let Some(resp) = req.and_then(|req| check_now(&ctx, &app, route, &parts, &req)) {
                return Handled::Now(resp, Some(app.metrics));
            }
            (app, trusted)
        }
        Admission::Answered(resp, metrics) => return Handled::Now(resp, metrics),
    };
    Handled::Later(Box::pin(async move {
        let answered_by = Some(app.metrics);
        let ctx = Ctx::new(&outpost, &rt, conn, trusted);
        let query = parts.uri.query().unwrap_or_default();
        let proxied = app.spec.mode == Mode::Proxy;
        let route = if proxied {
            under_external_path(route, &app, parts.uri.path())
        } else {
            route
        };
        let resp = match (signed(route, &app, query), route) {
            (Some(Signature::Callback), _) | (None, Route::Callback) => {
                Box::pin(callback(&ctx, &app, &parts.headers, query)).await
            }
            (Some(Signature::Logout), _) | (None, Route::SignOut) => {
                Box::pin(sign_out(&app, &parts.headers)).await
            }
            (None, Route::Start) => start(&app, &parts.headers, query),
            // Proxy mode: everything else is the application's (forward-auth checks included).
            (None, _) if proxied => Box::pin(proxy(&ctx, &app, parts, body)).await,
            // The check is parsed again (`admit` parsed it for `check_now`, from `parts`,
            // which this future now owns). The login and logout futures (token calls) are
            // boxed: the allocation of a check that must wait stays small.
            (None, Route::Auth(flavour)) => {
                let req = AuthRequest::parse(flavour, &parts, trusted);
                auth(&ctx, &app, &parts, &req).await
            }
            (None, _) => respond::text(StatusCode::NOT_FOUND, "404 page not found"),
        };
        (resp, answered_by)
    }))
}

/// The callback or sign-out signature in the request's query that decides the endpoint. Like
/// authentik, a signature wins over the path, except on the forward-auth checks, whose own
/// query is not the user's (in proxy mode every path is the user's).
fn signed(route: Route, app: &Application, query: &str) -> Option<Signature> {
    let own_query = app.spec.mode != Mode::Proxy
        && matches!(
            route,
            Route::Auth(Flavour::Nginx | Flavour::Traefik | Flavour::Caddy)
        );
    if own_query { None } else { signature(query) }
}

/// A forward-auth check answered without waiting ([`auth::auth_now`]): not in proxy mode,
/// no signature to follow, and the session known to the memo and the caches. `None`: the
/// full path must run.
fn check_now(
    ctx: &Ctx<'_>,
    app: &Arc<Application>,
    route: Route,
    parts: &Parts,
    req: &AuthRequest<'_>,
) -> Option<Response<Body>> {
    if app.spec.mode == Mode::Proxy
        || signed(route, app, parts.uri.query().unwrap_or_default()).is_some()
    {
        return None;
    }
    auth_now(ctx, app, parts, req)
}

/// What every request of the outpost listener goes through before its endpoint: the
/// endpoints that need no application, the configuration being loaded, the application by
/// host, and the per-client rate. The application, whether the peer is a trusted proxy and
/// (for a check) the parsed check, or the answer.
fn admit<'p>(
    outpost: &Outpost,
    rt: &Runtime,
    route: Route,
    parts: &'p Parts,
    peer: SocketAddr,
) -> Admission<'p> {
    match route {
        Route::Ping => return Admission::Answered(respond::empty(StatusCode::NO_CONTENT), None),
        Route::Ready => return Admission::Answered(ready(outpost), None),
        _ => {}
    }
    if !rt.loaded {
        return Admission::Answered(
            respond::unavailable("the outpost has not received its configuration yet"),
            None,
        );
    }
    let trusted = rt.settings.is_trusted(peer.ip());
    // A check is parsed once, here: its original URL also names the application.
    let req = match route {
        Route::Auth(f) => Some(AuthRequest::parse(f, parts, trusted)),
        _ => None,
    };
    let host = match &req {
        Some(r) => r.host(parts, trusted),
        None => request_host(parts, trusted, None),
    }
    .unwrap_or_default();
    let Some(app) = rt.apps.lookup(host).cloned() else {
        tracing::debug!(host, "no application for this host");
        return Admission::Answered(with_log(respond::no_app(host), "", "no_app", ""), None);
    };
    // Clients are counted, reverse proxies are not: neither trusted peers nor forward-auth
    // checks (a proxy asking for its users, cheap to answer) use up a client's rate.
    let check = matches!(route, Route::Auth(_)) && app.spec.mode != Mode::Proxy;
    if !trusted && !check && !outpost.admit_client(peer.ip(), rt.settings.client_rate) {
        // Counted in the application's metrics, as its other answers are.
        return Admission::Answered(respond::too_many_requests(), Some(app.metrics));
    }
    Admission::Admitted(app, trusted, req)
}

/// What [`admit`] found.
enum Admission<'p> {
    /// The application, whether the peer is a trusted proxy, the parsed check.
    Admitted(Arc<Application>, bool, Option<AuthRequest<'p>>),
    /// Answered before any endpoint, and the application's metrics if one was found.
    Answered(Response<Body>, Option<&'static HostMetrics>),
}

/// Proxy mode: an external host with a path (`https://app.example.com/sub`) has its login,
/// callback and sign-out under that path too (`/sub/outpost.goauthentik.io/start`), where
/// its own redirects point; without this they would be proxied, and the login would loop.
fn under_external_path(route: Route, app: &Application, path: &str) -> Route {
    let base = app.spec.external_host.path().trim_end_matches('/');
    if base.is_empty() || route != Route::NotFound {
        return route;
    }
    match path.strip_prefix(base).map(Route::from_path) {
        Some(r @ (Route::Start | Route::Callback | Route::SignOut)) => r,
        _ => route,
    }
}

/// `403` for a signed-in user outside the allowed groups.
fn forbidden(ctx: &Ctx<'_>, app: &Application, user: &str) -> Response<Body> {
    let name = &app.spec.name;
    let r = respond::error_page(
        StatusCode::FORBIDDEN,
        "Access denied",
        &format!("You are signed in as {user}, but your account is not allowed to use {name}."),
    );
    ctx.logged(r, name, "forbidden", user)
}

fn with_log(mut r: Response<Body>, app: &str, outcome: &'static str, user: &str) -> Response<Body> {
    r.extensions_mut().insert(LogInfo {
        app: app.to_string(),
        outcome,
        user: user.to_string(),
    });
    r
}

fn ready(outpost: &Outpost) -> Response<Body> {
    match outpost.ready() {
        // Still ready while a provider is down: sessions it confirmed keep working, and a
        // replica taken out of rotation would only move the same outage elsewhere.
        Ok(()) => match outpost.degraded() {
            None => respond::text(StatusCode::OK, "ready"),
            Some(why) => respond::text(StatusCode::OK, &format!("ready (degraded: {why})")),
        },
        Err(reason) => respond::text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not ready: {reason}"),
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Signature {
    Callback,
    Logout,
}

fn signature(query: &str) -> Option<Signature> {
    if query.is_empty() {
        return None;
    }
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if v.eq_ignore_ascii_case("true") {
            if k == CALLBACK_SIGNATURE {
                return Some(Signature::Callback);
            }
            if k == LOGOUT_SIGNATURE {
                return Some(Signature::Logout);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(
            signature("X-authentik-auth-callback=true&code=1"),
            Some(Signature::Callback)
        );
        assert_eq!(
            signature("a=1&X-authentik-logout=TRUE"),
            Some(Signature::Logout)
        );
        assert_eq!(signature("X-authentik-auth-callback=false"), None);
        assert_eq!(signature(""), None);
    }
}
