//! Where a browser may be sent after login. A [`RedirectTarget`] can only be made by checking a
//! parsed URL against the application: its own external host (forward_single), or a host under
//! the cookie domain on a label boundary (forward_domain). Strings are never prefix- or suffix-
//! matched, and anything doubtful falls back to the external host. No I/O.

use url::Url;

use crate::core::app::{AppSpec, Mode, host_in_domain};

/// A validated post-login destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget(Url);

impl RedirectTarget {
    /// The application's own external host: always allowed.
    pub fn home(app: &AppSpec) -> RedirectTarget {
        RedirectTarget(app.external_host.clone())
    }

    /// Validates a user-supplied target (absolute URL or absolute path).
    pub fn parse(raw: &str, app: &AppSpec) -> Option<RedirectTarget> {
        let raw = raw.trim_matches(|c: char| c == ' ');
        if raw.is_empty() || raw.len() > 8192 {
            return None;
        }
        // Browsers treat `\` as `/` and drop tabs and newlines; refuse such input outright.
        if raw.chars().any(|c| c.is_control() || c == '\\') {
            return None;
        }
        let url = if raw.starts_with('/') {
            if raw.starts_with("//") {
                return None;
            }
            app.external_host.join(raw).ok()?
        } else {
            Url::parse(raw).ok()?
        };
        Self::check(url, app)
    }

    /// Validates an already parsed URL.
    pub fn check(mut url: Url, app: &AppSpec) -> Option<RedirectTarget> {
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = url.host_str()?.to_string();
        let ext = &app.external_host;
        let same_host = ext.host_str() == Some(host.as_str()) && ext.port() == url.port();
        let allowed = match app.mode {
            Mode::ForwardSingle | Mode::Proxy => same_host,
            Mode::ForwardDomain => {
                same_host
                    || (matches!(url.host(), Some(url::Host::Domain(_)))
                        && host_in_domain(&host, &app.cookie_domain))
            }
        };
        if !allowed {
            return None;
        }
        url.set_fragment(None);
        Some(RedirectTarget(url))
    }

    /// Validates or falls back to the external host.
    pub fn parse_or_home(raw: Option<&str>, app: &AppSpec) -> RedirectTarget {
        raw.and_then(|r| Self::parse(r, app))
            .unwrap_or_else(|| Self::home(app))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

/// Reads `rd` from a `/start` query. nginx configs commonly write
/// `?rd=$scheme://$http_host$request_uri` unescaped, so an `rd` that is a literal absolute URL
/// takes the rest of the query (the original query's own `&` included) instead of being cut at
/// the first `&`.
pub fn rd_from_query(query: &str) -> Option<String> {
    let mut offset = 0;
    for part in query.split('&') {
        if let Some(v) = part.strip_prefix("rd=") {
            if v.starts_with("http://") || v.starts_with("https://") || v.starts_with('/') {
                // Unescaped: the rest of the query is the target, minus our own parameters.
                let rest = &query[offset + 3..];
                let rest = rest.find("&attempt=").map_or(rest, |cut| &rest[..cut]);
                return Some(rest.to_string());
            }
            return url::form_urlencoded::parse(part.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned());
        }
        offset += part.len() + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single() -> AppSpec {
        AppSpec::new(
            "a".into(),
            "https://app.example.com",
            Mode::ForwardSingle,
            "",
            "",
            vec![],
        )
        .unwrap()
    }

    fn domain() -> AppSpec {
        AppSpec::new(
            "a".into(),
            "https://auth.example.com",
            Mode::ForwardDomain,
            ".example.com",
            "",
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn single_mode_accepts_only_its_host() {
        let app = single();
        let ok = |s: &str| RedirectTarget::parse(s, &app).map(|t| t.as_str().to_string());
        assert_eq!(
            ok("https://app.example.com/x?y=1").as_deref(),
            Some("https://app.example.com/x?y=1")
        );
        assert_eq!(
            ok("/path?q=1").as_deref(),
            Some("https://app.example.com/path?q=1")
        );
        assert_eq!(
            ok("http://app.example.com/plain").as_deref(),
            Some("http://app.example.com/plain")
        );
        assert_eq!(
            ok("https://APP.example.com/").as_deref(),
            Some("https://app.example.com/")
        );
        for evil in [
            "https://evil.com/",
            "//evil.com/",
            "/\\evil.com/",
            "\\\\evil.com",
            "https://app.example.com.evil.com/",
            "https://app.example.com@evil.com/",
            "https://user:pw@app.example.com/",
            "https://evil.com\\@app.example.com/",
            "https://app.example.com:8443/",
            "javascript:alert(1)",
            "data:text/html,x",
            "/\t/evil.com",
            "https://evilapp.example.com/",
            "%2F%2Fevil.com",
            "https:evil.com",
            "",
        ] {
            assert_eq!(ok(evil), None, "{evil:?}");
        }
    }

    #[test]
    fn domain_mode_accepts_subdomains_on_label_boundary() {
        let app = domain();
        let ok = |s: &str| RedirectTarget::parse(s, &app).is_some();
        assert!(ok("https://grafana.example.com/d/1"));
        assert!(ok("https://example.com/"));
        assert!(ok("https://auth.example.com/"));
        assert!(ok("/relative"));
        assert!(!ok("https://evilexample.com/"));
        assert!(!ok("https://example.com.evil.com/"));
        assert!(!ok("https://grafana.example.com@evil.com/"));
        assert!(!ok("https://10.0.0.1/"));
    }

    #[test]
    fn fallback_is_home() {
        let app = single();
        assert_eq!(
            RedirectTarget::parse_or_home(Some("https://evil.com"), &app).as_str(),
            "https://app.example.com/"
        );
        assert_eq!(
            RedirectTarget::parse_or_home(None, &app).as_str(),
            "https://app.example.com/"
        );
    }

    #[test]
    fn rd_parsing() {
        assert_eq!(
            rd_from_query("rd=https%3A%2F%2Fapp%2Fx%3Fa%3D1%26b%3D2").as_deref(),
            Some("https://app/x?a=1&b=2")
        );
        assert_eq!(
            rd_from_query("rd=https://app/x?a=1&b=2").as_deref(),
            Some("https://app/x?a=1&b=2")
        );
        assert_eq!(
            rd_from_query("rd=https://app/x?a=1&b=2&attempt=2").as_deref(),
            Some("https://app/x?a=1&b=2")
        );
        assert_eq!(
            rd_from_query("attempt=1&rd=%2Fpath").as_deref(),
            Some("/path")
        );
        assert_eq!(rd_from_query("x=1").as_deref(), None);
        assert_eq!(rd_from_query("rd=").as_deref(), Some(""));
    }

    mod properties {
        use proptest::prelude::*;
        use url::Host;

        use super::*;

        /// Hosts near the applications' own: look-alikes, suffix and prefix tricks, IPs, IDN.
        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                2 => prop::sample::select(vec![
                    "app.example.com", "APP.Example.com", "app.example.com.", "example.com",
                    "auth.example.com", "grafana.example.com", "a.b.example.com",
                ])
                .prop_map(str::to_string),
                2 => prop::sample::select(vec![
                    "evil.com", "app.example.com.evil.com", "evilapp.example.com",
                    "evilexample.com", "example.com.evil.com", "exa%6Dple.com",
                    "app%2eexample.com", "10.0.0.1", "0x7f.1", "[::1]", "xn--bcher-kva.example",
                    "bücher.example.com", "ａｐｐ.example.com", "app.example.com%00", "", " ",
                ])
                .prop_map(str::to_string),
                1 => "[a-z0-9-]{1,8}(\\.[a-z0-9-]{1,8}){0,3}(\\.example\\.com)?",
            ]
        }

        /// One of `common` (half the time) or of `rare`.
        fn piece(
            common: &'static str,
            rare: Vec<&'static str>,
        ) -> impl Strategy<Value = &'static str> {
            prop_oneof![Just(common), prop::sample::select(rare)]
        }

        /// Targets built from hostile pieces, sometimes with characters percent-encoded.
        fn target() -> impl Strategy<Value = String> {
            let scheme = piece(
                "https://",
                vec![
                    "http://",
                    "HTTPS://",
                    "//",
                    "/",
                    "\\\\",
                    "/\\",
                    "https:",
                    "https:/",
                    "https:///",
                    "javascript:",
                    "ftp://",
                    "data:text/html,",
                    " https://",
                    "",
                ],
            );
            let userinfo = piece(
                "",
                vec![
                    "user@",
                    "user:pw@",
                    "app.example.com@",
                    "evil.com%2F@",
                    "evil.com\\@",
                    "@",
                    ":@",
                ],
            );
            let port = piece("", vec![":443", ":80", ":8443", ":0", ":"]);
            let path = "(/[a-zA-Z0-9%._~!$&'()*+,;=:@\\\\-]{0,8}){0,4}(\\?[a-z=&/:.]{0,12})?(#[a-z/]{0,6})?";
            (scheme, userinfo, host(), port, path, any::<u64>()).prop_map(
                |(scheme, userinfo, host, port, path, enc)| {
                    let raw = format!("{scheme}{userinfo}{host}{port}{path}");
                    if enc % 4 != 0 {
                        return raw;
                    }
                    // A quarter of the time, percent-encode some ASCII characters.
                    raw.chars()
                        .enumerate()
                        .map(|(i, c)| {
                            if c.is_ascii() && (enc >> (i % 61)) & 7 == 7 {
                                format!("%{:02X}", c as u32)
                            } else {
                                c.to_string()
                            }
                        })
                        .collect()
                },
            )
        }

        fn in_domain(host: &str, domain: &str) -> bool {
            let host = host.trim_end_matches('.');
            host == domain || host.ends_with(&format!(".{domain}"))
        }

        /// The checks every accepted target passes, for either application.
        fn assert_safe(raw: &str, app: &AppSpec) -> Result<(), TestCaseError> {
            let Some(t) = RedirectTarget::parse(raw, app) else {
                return Ok(());
            };
            let u = t.url();
            prop_assert!(matches!(u.scheme(), "http" | "https"), "{raw:?} -> {u}");
            prop_assert!(
                u.username().is_empty() && u.password().is_none(),
                "{raw:?} -> {u}"
            );
            prop_assert!(u.fragment().is_none(), "{raw:?} -> {u}");
            let host = u.host_str().unwrap_or_default();
            let same = u.host() == app.external_host.host() && u.port() == app.external_host.port();
            match app.mode {
                Mode::ForwardDomain => prop_assert!(
                    same || (matches!(u.host(), Some(Host::Domain(_)))
                        && in_domain(host, &app.cookie_domain)),
                    "{raw:?} -> {u}"
                ),
                _ => prop_assert!(same, "{raw:?} -> {u}"),
            }
            let trimmed = raw.trim_matches(' ');
            if trimmed.starts_with('/') {
                prop_assert!(same, "a path left the host: {raw:?} -> {u}");
            }
            // What a browser reads back from the Location header is the same URL.
            prop_assert_eq!(&Url::parse(t.as_str()).unwrap(), u);
            Ok(())
        }

        /// The generator is not vacuous: many of its targets are accepted, by either app.
        #[test]
        fn generated_targets_are_often_accepted() {
            use proptest::strategy::ValueTree;
            use proptest::test_runner::TestRunner;
            let mut runner = TestRunner::deterministic();
            let (single, domain) = (single(), domain());
            let (mut by_single, mut by_domain) = (0, 0);
            for _ in 0..2000 {
                let raw = target().new_tree(&mut runner).unwrap().current();
                by_single += usize::from(RedirectTarget::parse(&raw, &single).is_some());
                by_domain += usize::from(RedirectTarget::parse(&raw, &domain).is_some());
            }
            eprintln!("accepted of 2000: {by_single} (single), {by_domain} (domain)");
            assert!(
                by_single >= 40 && by_domain >= 150,
                "{by_single} {by_domain}"
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn accepted_targets_stay_on_the_application(raw in target()) {
                assert_safe(&raw, &single())?;
                assert_safe(&raw, &domain())?;
            }

            #[test]
            fn any_text_is_safe(raw in ".{0,40}") {
                assert_safe(&raw, &single())?;
                assert_safe(&raw, &domain())?;
            }

            /// Not vacuous: a plain path on the application's own host is accepted as is.
            #[test]
            fn own_paths_are_accepted(path in "(/[a-zA-Z0-9._~-]{1,8}){1,4}(\\?[a-z]{1,4}=[a-z0-9]{0,4})?") {
                let t = RedirectTarget::parse(&format!("https://app.example.com{path}"), &single());
                prop_assert_eq!(
                    t.map(|t| t.as_str().to_string()),
                    Some(Url::parse(&format!("https://app.example.com{path}")).unwrap().to_string())
                );
                prop_assert!(RedirectTarget::parse(&path, &single()).is_some());
                let sub = format!("https://grafana.example.com{path}");
                prop_assert!(RedirectTarget::parse(&sub, &domain()).is_some());
            }
        }
    }
}
