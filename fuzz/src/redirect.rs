//! `redirect`: post-login targets (`RedirectTarget::parse`, `check`, `parse_or_home`) and the
//! `rd` query reader (`rd_from_query`), against applications in both forward modes.
//!
//! Input: the first byte picks the application and whether the rest is an `rd` value or a
//! whole `/start` query; the rest is text (lossily decoded).
//!
//! Invariants: an accepted target is http(s), has no userinfo and no fragment, and is on the
//! application's own host and port (forward_single) or on it or a host under the cookie
//! domain on a label boundary (forward_domain, DNS names only); an absolute path never leaves
//! the application's host; the target re-parses to the same URL, and its text starts with
//! exactly `scheme://host[:port]`, so a browser reads the same host.

use std::sync::OnceLock;

use ak_outpost::core::app::{AppSpec, Mode};
use ak_outpost::core::redirect::{RedirectTarget, rd_from_query};
use url::{Host, Url};

/// The applications targets are checked against: plain, with a port and a path, an IDN
/// host, IP hosts, and forward_domain ones (one with an IDN cookie domain).
fn apps() -> &'static [AppSpec] {
    static APPS: OnceLock<Vec<AppSpec>> = OnceLock::new();
    APPS.get_or_init(|| {
        let spec = |host: &str, mode: Mode, domain: &str| {
            AppSpec::new("fuzz".into(), host, mode, domain, "", vec![])
                .unwrap_or_else(|e| panic!("fuzz app {host}: {e:?}"))
        };
        vec![
            spec("https://app.example.com", Mode::ForwardSingle, ""),
            spec("http://app.example.com:8080/sub/", Mode::ForwardSingle, ""),
            spec("https://bücher.example", Mode::ForwardSingle, ""),
            spec("https://10.0.0.1:8443", Mode::ForwardSingle, ""),
            spec("https://[::1]", Mode::ForwardSingle, ""),
            spec(
                "https://auth.example.com",
                Mode::ForwardDomain,
                ".example.com",
            ),
            spec(
                "https://auth.xn--bcher-kva.example",
                Mode::ForwardDomain,
                "xn--bcher-kva.example",
            ),
        ]
    })
}

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let apps = apps();
    let app = &apps[usize::from(first & 0x7f) % apps.len()];
    let text = String::from_utf8_lossy(rest);
    let raw = if first & 0x80 != 0 {
        match rd_from_query(&text) {
            Some(rd) => rd,
            None => return,
        }
    } else {
        text.into_owned()
    };
    check_raw(&raw, app);
}

/// Every entry point on one raw value, each accepted target checked.
pub fn check_raw(raw: &str, app: &AppSpec) {
    let parsed = RedirectTarget::parse(raw, app);
    if let Some(t) = &parsed {
        assert_allowed(t, app, raw);
        let trimmed = raw.trim_matches(' ');
        if trimmed.starts_with('/') {
            let (u, ext) = (t.url(), &app.external_host);
            assert!(
                u.host() == ext.host() && u.port() == ext.port(),
                "a path left the application's host: {raw:?} -> {}",
                t.as_str()
            );
        }
    }
    if let Ok(u) = Url::parse(raw)
        && let Some(t) = RedirectTarget::check(u, app)
    {
        assert_allowed(&t, app, raw);
    }
    let t = RedirectTarget::parse_or_home(Some(raw), app);
    assert_allowed(&t, app, raw);
    if parsed.is_none() {
        assert_eq!(t, RedirectTarget::home(app), "fallback is home for {raw:?}");
    }
}

/// The invariants of an accepted target.
pub fn assert_allowed(t: &RedirectTarget, app: &AppSpec, raw: &str) {
    let u = t.url();
    let ext = &app.external_host;
    assert!(
        matches!(u.scheme(), "http" | "https"),
        "scheme of {raw:?}: {u}"
    );
    assert!(
        u.username().is_empty() && u.password().is_none(),
        "userinfo in {raw:?}: {u}"
    );
    assert!(u.fragment().is_none(), "fragment in {raw:?}: {u}");
    let host = u
        .host_str()
        .unwrap_or_else(|| panic!("no host: {raw:?} -> {u}"));
    let same_host = u.host() == ext.host() && u.port() == ext.port();
    let allowed = match app.mode {
        Mode::ForwardSingle | Mode::Proxy => same_host,
        Mode::ForwardDomain => {
            same_host
                || (matches!(u.host(), Some(Host::Domain(_)))
                    && under_domain(host, &app.cookie_domain))
        }
    };
    assert!(
        allowed,
        "{raw:?} accepted as {u} for {ext} ({:?})",
        app.mode
    );
    // The text a browser gets starts with exactly `scheme://host[:port]`, then the path.
    let origin = match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    };
    let after = t.as_str().strip_prefix(&origin);
    assert!(
        after.is_some_and(|a| a.starts_with('/')),
        "{} does not start with {origin}/",
        t.as_str()
    );
    let again = Url::parse(t.as_str()).unwrap_or_else(|e| panic!("{} re-parse: {e}", t.as_str()));
    assert_eq!(&again, u, "re-parsing changes {}", t.as_str());
}

/// `host` is `domain` or under it on a label boundary (written independently of
/// `core::app::host_in_domain`; a trailing dot is the same name).
fn under_domain(host: &str, domain: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
}
