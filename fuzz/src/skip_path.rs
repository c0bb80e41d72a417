//! `skip_path`: skip-path matching — `normalized_path` and `AppSpec::is_skipped` on URLs as the
//! edge hands them over (`X-Original-URL` through `AuthRequest::parse`, then
//! `OriginalUrl::url`), in both forward modes, with the rules below (compiled once: the rules
//! are the administrator's, and fuzzing the regex compiler is the regex crate's business).
//!
//! Input: the first byte picks the application; the rest is a URL, or a path on the
//! application's host.
//!
//! Invariants: a normalised path starts with `/`, has no empty, `.` or `..` segment, no control
//! character or `\`, and (without `%`) normalises to itself; the query and the fragment never
//! change the answer; a URL whose path is replaced by its normalised form gets the same answer;
//! a path that cannot be normalised is never skipped.

use std::sync::OnceLock;

use ak_outpost::core::app::{AppSpec, Mode, normalized_path};
use ak_outpost::core::paths::Flavour;
use ak_outpost::core::request::AuthRequest;
use url::Url;

/// Skip rules of forward_single applications (matched against the normalised path).
const PATH_RULES: &str = "^/public/\n^/health$\n^/static/.*\\.(css|js)$\n/api/v[0-9]+/status\n\
    (?i)^/PUBLIC-CI/\n^/[^/]+/open$\n\\.well-known/\n^/$\n^/ü/\n^/a b/\n^/ping\\?\n^/x%2Fy";
/// Skip rules of forward_domain applications (matched against `scheme://host[:port]/path`).
const URL_RULES: &str = "^https://pub\\.example\\.com/\n^https?://[^/]+/api/public(/|$)\n\
    ^http://app\\.example\\.com:8080/x$\n^https://[a-z]+\\.example\\.com/health$\n/static/";

/// (external host, mode, cookie domain, skip rules).
const APPS: &[(&str, Mode, &str, &str)] = &[
    (
        "https://app.example.com",
        Mode::ForwardSingle,
        "",
        PATH_RULES,
    ),
    (
        "https://auth.example.com",
        Mode::ForwardDomain,
        "example.com",
        URL_RULES,
    ),
    (
        "http://app.example.com:8080/sub",
        Mode::ForwardSingle,
        "",
        PATH_RULES,
    ),
    ("https://[::1]:8443", Mode::ForwardSingle, "", PATH_RULES),
];

/// The applications of [`APPS`], their rules compiled once.
fn apps() -> &'static [AppSpec] {
    static SPECS: OnceLock<Vec<AppSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        APPS.iter()
            .map(|&(host, mode, domain, rules)| {
                let spec = AppSpec::new("fuzz".into(), host, mode, domain, rules, vec![])
                    .unwrap_or_else(|e| panic!("fuzz app {host}: {e:?}"));
                assert_eq!(spec.skip_paths.len(), rules.lines().count());
                spec
            })
            .collect()
    })
}

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let apps = apps();
    let app = &apps[usize::from(first) % apps.len()];
    let target = String::from_utf8_lossy(rest);
    let original = if target.starts_with("http://") || target.starts_with("https://") {
        target.into_owned()
    } else {
        let origin = app.external_host.origin().ascii_serialization();
        format!("{origin}{target}")
    };
    check_url(app, &original);
}

/// Checks one URL as the edge hands it over, and directly parsed.
pub fn check_url(app: &AppSpec, original: &str) {
    if let Ok(v) = http::HeaderValue::from_str(original) {
        let req = http::Request::builder()
            .uri("/outpost.goauthentik.io/auth/nginx")
            .header("x-original-url", v)
            .body(());
        if let Ok(req) = req {
            let (parts, ()) = req.into_parts();
            if let Ok(u) = AuthRequest::parse(Flavour::Nginx, &parts, true).original
                && let Some(url) = u.url()
            {
                check(app, url);
            }
        }
    }
    if let Ok(url) = Url::parse(original) {
        check(app, &url);
    }
}

fn check(app: &AppSpec, url: &Url) {
    let skipped = app.is_skipped(url);
    let Some(n) = normalized_path(url.path()) else {
        assert!(!skipped, "{url}: unnormalisable path skipped");
        return;
    };
    assert!(n.starts_with('/'), "{url}: {n:?}");
    assert!(
        !n.chars().any(|c| c.is_control() || c == '\\'),
        "{url}: {n:?}"
    );
    let inner = n.strip_suffix('/').unwrap_or(&n);
    for seg in inner.split('/').skip(1) {
        assert!(
            !matches!(seg, "" | "." | ".."),
            "{url}: segment {seg:?} in {n:?}"
        );
    }
    if !n.contains('%') {
        assert_eq!(
            normalized_path(&n).as_deref(),
            Some(&*n),
            "{url}: not idempotent"
        );
        let mut same_path = url.clone();
        same_path.set_path(&n);
        assert_eq!(
            app.is_skipped(&same_path),
            skipped,
            "{url} and {same_path} differ"
        );
    }
    let mut plain = url.clone();
    plain.set_query(None);
    plain.set_fragment(None);
    assert_eq!(app.is_skipped(&plain), skipped, "{url}: the query counted");
    let mut other = plain.clone();
    other.set_query(Some("x=/public/&/health"));
    other.set_fragment(Some("/public/"));
    assert_eq!(app.is_skipped(&other), skipped, "{url}: the query counted");
}
