//! Applications as the core sees them: [`AppSpec`] holds one application's validated settings
//! (external host, mode, cookie domain, skip paths, allowed groups) and [`Site`] adds its
//! sealing keys and names; host and path helpers (label-boundary domain match, path
//! normalisation, authentik's cookie name). No network and no shared state: the provider
//! client and the host index live in `state::application`.

use std::sync::Arc;

use memchr::memmem;
use regex_lite::Regex;
use sha2::{Digest, Sha256};
use url::Url;

use crate::core::paths::CALLBACK_PATH;
use crate::core::seal::Sealer;
use crate::core::upstream::Upstream;

/// How the external reverse proxy and the outpost share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One application on one host; cookies are host-only.
    ForwardSingle,
    /// One login for every host under `cookie_domain`; `external_host` is the central auth host.
    ForwardDomain,
    /// The outpost is the reverse proxy: it logs users in on the application's own host and
    /// forwards their requests to the upstream (`internal_host`).
    Proxy,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ForwardSingle => "forward_single",
            Mode::ForwardDomain => "forward_domain",
            Mode::Proxy => "proxy",
        }
    }
}

/// Validated settings of one application.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub name: String,
    pub external_host: Url,
    pub mode: Mode,
    /// Lower-case, no leading dot; empty when unset (and always empty in forward_single).
    pub cookie_domain: String,
    pub skip_paths: Vec<Regex>,
    pub allowed_groups: Vec<String>,
    pub redirect_uri: String,
    /// Let CORS preflights through unauthenticated (they carry no cookies).
    pub allow_cors_preflight: bool,
    /// Where proxy mode forwards requests; set (by the configuration source) exactly when
    /// `mode` is [`Mode::Proxy`].
    pub upstream: Option<Upstream>,
}

impl AppSpec {
    /// Validates one application's settings; every problem is returned.
    pub fn new(
        name: String,
        external_host: &str,
        mode: Mode,
        cookie_domain: &str,
        skip_path_regex: &str,
        allowed_groups: Vec<String>,
    ) -> Result<AppSpec, Vec<String>> {
        let mut errs = Vec::new();
        let url = match Url::parse(external_host.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if u.query().is_some() || u.fragment().is_some() {
                    errs.push(format!(
                        "external_host '{external_host}' must not have a query or fragment"
                    ));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    errs.push(format!(
                        "external_host '{external_host}' must not contain credentials"
                    ));
                }
                Some(u)
            }
            _ => {
                errs.push(format!(
                    "external_host '{external_host}' is not an http(s) URL like https://app.example.com"
                ));
                None
            }
        };
        let cd = cookie_domain
            .trim()
            .trim_start_matches('.')
            .to_ascii_lowercase();
        if mode == Mode::ForwardDomain {
            if cd.is_empty() {
                errs.push(
                    "cookie_domain is required in forward_domain mode (e.g. example.com)".into(),
                );
            } else if let Some(u) = &url {
                let host = u.host_str().unwrap_or_default();
                if !host_in_domain(host, &cd) {
                    errs.push(format!(
                        "cookie_domain '{cd}' does not contain the external_host {host}; the login host must be under the cookie domain"
                    ));
                }
            }
            if !cd.is_empty() && !cd.contains('.') {
                errs.push(format!(
                    "cookie_domain '{cd}' is a top-level domain; browsers refuse such cookies"
                ));
            }
        }
        let mut skip_paths = Vec::new();
        for (n, line) in skip_path_regex.split('\n').enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                // An empty line would match every request; it is ignored, not honoured.
                continue;
            }
            match Regex::new(line) {
                Ok(r) => skip_paths.push(r),
                Err(e) => errs.push(format!(
                    "skip_path_regex line {}: {}",
                    n + 1,
                    e.to_string().lines().last().unwrap_or("invalid regex")
                )),
            }
        }
        for g in &allowed_groups {
            if g.trim().is_empty() {
                errs.push("allowed_groups: empty group name".into());
            }
        }
        match url {
            Some(url) if errs.is_empty() => {
                let redirect_uri = callback_uri(&url);
                Ok(AppSpec {
                    name,
                    external_host: url,
                    mode,
                    cookie_domain: if mode == Mode::ForwardDomain {
                        cd
                    } else {
                        String::new()
                    },
                    skip_paths,
                    allowed_groups,
                    redirect_uri,
                    allow_cors_preflight: false,
                    upstream: None,
                })
            }
            _ => Err(errs),
        }
    }

    /// `host[:port]` of the external host: the routing key.
    pub fn host_key(&self) -> String {
        host_key(&self.external_host)
    }

    /// Whether any path is public (checks of other apps never need the URL parsed).
    pub fn has_skip_paths(&self) -> bool {
        !self.skip_paths.is_empty()
    }

    /// Whether an unauthenticated request for `url` may pass (skip_path_regex). Single mode
    /// tests the normalised path, domain mode `scheme://host[:port]/path`; the query is never
    /// part of the test string, and a path that cannot be normalised never matches.
    pub fn is_skipped(&self, url: &Url) -> bool {
        if self.skip_paths.is_empty() {
            return false;
        }
        let Some(path) = normalized_path(url.path()) else {
            return false;
        };
        let subject = match self.mode {
            Mode::ForwardSingle | Mode::Proxy => path,
            Mode::ForwardDomain => format!("{}://{}{}", url.scheme(), host_key(url), path),
        };
        self.skip_paths.iter().any(|r| r.is_match(&subject))
    }

    /// Whether a user with these groups may use the application.
    pub fn allows_groups(&self, groups: &[String]) -> bool {
        self.allowed_groups.is_empty() || groups.iter().any(|g| self.allowed_groups.contains(g))
    }
}

/// `https://app/sub` → `https://app/sub/outpost.goauthentik.io/callback?X-authentik-auth-callback=true`.
pub fn callback_uri(external: &Url) -> String {
    let mut u = external.clone();
    let base = external.path().trim_end_matches('/');
    u.set_path(&format!("{base}{CALLBACK_PATH}"));
    u.set_query(Some("X-authentik-auth-callback=true"));
    u.to_string()
}

/// `host[:port]` (port only when not the scheme default), lower-case.
pub fn host_key(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    }
}

/// True when `host` is `domain` or a sub-domain of it, on a label boundary.
pub fn host_in_domain(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.');
    if domain.is_empty() {
        return false;
    }
    host.eq_ignore_ascii_case(domain)
        || (host.len() > domain.len()
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain))
}

/// Whether a path as sent (not yet decoded) has a `..` segment, literal, percent-encoded, or
/// made by an encoded `/` or `\`. nginx and Caddy resolve such a path to route it but hand it
/// to the application as sent, and an application that does not resolve `..` itself serves
/// another page than the one the resolved path names: no skip rule may apply to it.
pub fn has_dot_dot_segment(raw_path: &str) -> bool {
    if !raw_path.contains("..") && !raw_path.contains('%') {
        return false;
    }
    percent_encoding::percent_decode_str(raw_path)
        .decode_utf8_lossy()
        .split(['/', '\\'])
        .any(|segment| segment == "..")
}

/// Percent-decodes a path, merges repeated slashes and resolves `.`/`..` segments, the way
/// nginx does before routing. `None` for anything that does not decode to clean text.
pub fn normalized_path(raw: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    if decoded.chars().any(|c| c.is_control()) || decoded.contains('\\') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut path = String::with_capacity(decoded.len() + 1);
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    Some(path)
}

/// Derives the cookie name authentik uses for a client: `authentik_proxy_<8 hex of sha256>`.
pub fn cookie_name(client_id: &str) -> CookieName {
    let digest = Sha256::digest(client_id.as_bytes());
    let mut hex = String::with_capacity(8);
    for b in &digest[..4] {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("authentik_proxy_{hex}").into()
}

/// A cookie's name with the searcher that finds it in a `Cookie` header, made once per
/// application: the session cookie is looked for on every check, among every other cookie
/// the browser has for the host. Reads as the name (`&str`) everywhere else.
#[derive(Clone, Debug)]
pub struct CookieName {
    name: String,
    finder: memmem::Finder<'static>,
}

impl CookieName {
    /// Finds the name in a `Cookie` header line.
    pub fn finder(&self) -> &memmem::Finder<'static> {
        &self.finder
    }
}

impl From<String> for CookieName {
    fn from(name: String) -> CookieName {
        let finder = memmem::Finder::new(name.as_bytes()).into_owned();
        CookieName { name, finder }
    }
}

impl From<&str> for CookieName {
    fn from(name: &str) -> CookieName {
        name.to_string().into()
    }
}

impl std::ops::Deref for CookieName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for CookieName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// What serving a site needs that involves no network: its validated settings, its sealing
/// keys and the names it is known by. `state::application::Application` adds the
/// provider client and the metrics.
pub struct Site {
    pub spec: AppSpec,
    pub sealer: Arc<Sealer>,
    pub cookie_name: CookieName,
    /// Sent as `X-authentik-meta-provider`.
    pub provider_name: String,
    /// Sent as `X-authentik-meta-app`.
    pub app_slug: String,
    /// Extra behaviour only authentik providers have.
    pub extras: AppExtras,
}

impl Site {
    pub fn secure_cookies(&self) -> bool {
        self.spec.external_host.scheme() == "https"
    }
}

/// Provider features beyond the standalone set (authentik mode).
#[derive(Debug, Clone, Default)]
pub struct AppExtras {
    /// `(user attribute, password attribute)` for `Authorization: Basic` to the app.
    pub basic_auth: Option<(String, String)>,
    /// Accept `Authorization: Bearer` tokens (introspected) in place of a session cookie.
    pub bearer_header: bool,
    /// Accept `Authorization: Basic` credentials (authentik app passwords).
    pub basic_header: bool,
    /// Proxy mode: a request with an `Authorization` header that authenticates nobody gets a
    /// 401 page instead of a login redirect (authentik's `intercept_header_auth`).
    pub intercept_header_auth: bool,
}

/// `example.com:8443` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec(host: &str, mode: Mode, cd: &str, skip: &str) -> AppSpec {
        AppSpec::new("t".into(), host, mode, cd, skip, vec![]).expect("valid spec")
    }

    #[test]
    fn callback_uri_follows_external_path() {
        let u = Url::parse("https://app.company").unwrap();
        assert_eq!(
            callback_uri(&u),
            "https://app.company/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
        );
        let u = Url::parse("https://app.company/sub/").unwrap();
        assert_eq!(
            callback_uri(&u),
            "https://app.company/sub/outpost.goauthentik.io/callback?X-authentik-auth-callback=true"
        );
    }

    #[test]
    fn cookie_name_is_authentiks() {
        let n = cookie_name("client");
        assert!(n.starts_with("authentik_proxy_"));
        assert_eq!(n.len(), "authentik_proxy_".len() + 8);
        // sha256("client") = 948fe603...
        assert_eq!(&*n, "authentik_proxy_948fe603");
    }

    #[test]
    fn domain_boundaries() {
        assert!(host_in_domain("a.example.com", "example.com"));
        assert!(host_in_domain("example.com", "example.com"));
        assert!(host_in_domain("A.Example.COM", "example.com"));
        assert!(!host_in_domain("evilexample.com", "example.com"));
        assert!(!host_in_domain("example.com.evil", "example.com"));
        assert!(!host_in_domain("com", "example.com"));
    }

    #[test]
    fn dot_dot_segments_in_raw_paths() {
        for raw in [
            "/private/../public/x",
            "/..",
            "/a/..",
            "/private/%2e%2e/public/x",
            "/private/.%2E/public/x",
            "/private/..%2fpublic/x",
            "/private%2F..%2Fpublic/x",
            "/private%5c..%5cpublic/x",
            "/private\\..\\public/x",
        ] {
            assert!(has_dot_dot_segment(raw), "{raw}");
        }
        for raw in [
            "/public/x",
            "/public/./x",
            "/public/x..y/..z",
            "/public/...",
            "/public/%2e",
            "/public/%252e%252e/x",
            "/public/%ff",
            "",
        ] {
            assert!(!has_dot_dot_segment(raw), "{raw}");
        }
    }

    #[test]
    fn path_normalisation() {
        let cases = [
            ("/a/b", Some("/a/b")),
            ("/a//b/", Some("/a/b/")),
            ("/public/../admin", Some("/admin")),
            ("/public/%2e%2e/admin", Some("/admin")),
            ("/public%2F..%2Fadmin", Some("/admin")),
            ("/a/./b/.", Some("/a/b/")),
            ("/..", Some("/")),
            ("", Some("/")),
            ("/%00", None),
            ("/%ff", None),
            ("/a%5Cb", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalized_path(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn skip_paths_single_mode_match_normalised_path_only() {
        let s = spec(
            "https://app.example.com",
            Mode::ForwardSingle,
            "",
            "^/public/\n\n^/health$",
        );
        let yes = |u: &str| s.is_skipped(&Url::parse(u).unwrap());
        assert!(yes("https://app.example.com/public/x"));
        assert!(yes("https://app.example.com/health"));
        assert!(
            !yes("https://app.example.com/healthz?x=/health"),
            "query is not matched"
        );
        assert!(!yes("https://app.example.com/private?r=/public/"));
        assert!(!yes("https://app.example.com/public/../admin"));
        assert!(!yes("https://app.example.com/public/%2e%2e/admin"));
        assert!(!yes("https://app.example.com/public%2F..%2Fadmin"));
        assert!(
            !yes("https://app.example.com/anything"),
            "empty lines must not allow all"
        );
    }

    #[test]
    fn skip_paths_domain_mode_match_url() {
        let s = spec(
            "https://auth.example.com",
            Mode::ForwardDomain,
            "example.com",
            "^https://health\\.example\\.com/ping",
        );
        let yes = |u: &str| s.is_skipped(&Url::parse(u).unwrap());
        assert!(yes("https://health.example.com/ping/x"));
        assert!(!yes("https://other.example.com/ping"));
        assert!(!yes("http://health.example.com/ping"));
    }

    #[test]
    fn bad_specs_are_rejected_with_reasons() {
        let e =
            AppSpec::new("x".into(), "ftp://a", Mode::ForwardSingle, "", "", vec![]).unwrap_err();
        assert!(e[0].contains("not an http(s) URL"));
        let e = AppSpec::new(
            "x".into(),
            "https://auth.other.com",
            Mode::ForwardDomain,
            "example.com",
            "",
            vec![],
        )
        .unwrap_err();
        assert!(e[0].contains("does not contain"));
        let e = AppSpec::new(
            "x".into(),
            "https://u:p@a.com",
            Mode::ForwardSingle,
            "",
            "(",
            vec![],
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn port_stripping() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
