//! Every path the outpost serves, spelled once. Constants and the path → route map, nothing
//! else.

/// Prefix of every outpost endpoint.
pub const PREFIX: &str = "/outpost.goauthentik.io";
pub const PING_PATH: &str = "/outpost.goauthentik.io/ping";
pub const READY_PATH: &str = "/outpost.goauthentik.io/ready";
pub const START_PATH: &str = "/outpost.goauthentik.io/start";
pub const CALLBACK_PATH: &str = "/outpost.goauthentik.io/callback";
pub const SIGN_OUT_PATH: &str = "/outpost.goauthentik.io/sign_out";
pub const AUTH_NGINX_PATH: &str = "/outpost.goauthentik.io/auth/nginx";
pub const AUTH_TRAEFIK_PATH: &str = "/outpost.goauthentik.io/auth/traefik";
pub const AUTH_CADDY_PATH: &str = "/outpost.goauthentik.io/auth/caddy";
pub const AUTH_ENVOY_PREFIX: &str = "/outpost.goauthentik.io/auth/envoy";
pub const METRICS_PATH: &str = "/metrics";

/// Query parameters that turn any application URL into a callback or a sign-out.
pub const CALLBACK_SIGNATURE: &str = "X-authentik-auth-callback";
pub const LOGOUT_SIGNATURE: &str = "X-authentik-logout";

/// Which reverse proxy asks, by endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Nginx,
    Traefik,
    Caddy,
    Envoy,
    /// Proxy mode: no reverse proxy asks; the outpost is the proxy and judges the
    /// application's own requests (never named by a path).
    Proxy,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Nginx => "nginx",
            Flavour::Traefik => "traefik",
            Flavour::Caddy => "caddy",
            Flavour::Envoy => "envoy",
            Flavour::Proxy => "proxy",
        }
    }
}

/// The endpoint a request path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Ping,
    Ready,
    Start,
    Callback,
    SignOut,
    Auth(Flavour),
    NotFound,
}

impl Route {
    /// Maps a request path to an endpoint. The bare prefix is nginx's auth check too, for
    /// configs that say `auth_request /outpost.goauthentik.io`.
    pub fn from_path(path: &str) -> Route {
        match path {
            AUTH_NGINX_PATH | PREFIX | "/outpost.goauthentik.io/" => Route::Auth(Flavour::Nginx),
            AUTH_TRAEFIK_PATH => Route::Auth(Flavour::Traefik),
            AUTH_CADDY_PATH => Route::Auth(Flavour::Caddy),
            START_PATH => Route::Start,
            CALLBACK_PATH => Route::Callback,
            SIGN_OUT_PATH => Route::SignOut,
            READY_PATH => Route::Ready,
            p if p.starts_with(PING_PATH) => Route::Ping,
            p if p == AUTH_ENVOY_PREFIX || p.starts_with("/outpost.goauthentik.io/auth/envoy/") => {
                Route::Auth(Flavour::Envoy)
            }
            _ => Route::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            (
                "/outpost.goauthentik.io/auth/nginx",
                Route::Auth(Flavour::Nginx),
            ),
            ("/outpost.goauthentik.io", Route::Auth(Flavour::Nginx)),
            (
                "/outpost.goauthentik.io/auth/traefik",
                Route::Auth(Flavour::Traefik),
            ),
            (
                "/outpost.goauthentik.io/auth/caddy",
                Route::Auth(Flavour::Caddy),
            ),
            (
                "/outpost.goauthentik.io/auth/envoy/some/path",
                Route::Auth(Flavour::Envoy),
            ),
            ("/outpost.goauthentik.io/auth/envoyx", Route::NotFound),
            ("/outpost.goauthentik.io/start", Route::Start),
            ("/outpost.goauthentik.io/callback", Route::Callback),
            ("/outpost.goauthentik.io/sign_out", Route::SignOut),
            ("/outpost.goauthentik.io/ping", Route::Ping),
            ("/outpost.goauthentik.io/ready", Route::Ready),
            ("/outpost.goauthentik.io/auth/nginx/", Route::NotFound),
            ("/", Route::NotFound),
        ];
        for (p, r) in cases {
            assert_eq!(Route::from_path(p), r, "{p}");
        }
    }
}
