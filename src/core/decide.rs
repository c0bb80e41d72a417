//! The decision: a pure function of the parsed request, what is known about the session, the
//! application and the time. No I/O; `http::respond` renders the result.

use std::sync::Arc;

use crate::core::app::{AppSpec, has_dot_dot_segment};
use crate::core::identity_headers::Prepared;
use crate::core::request::{AuthRequest, ForwardError};
use crate::core::session::Session;

/// What the session check (unseal, renew, introspect) found.
#[derive(Debug)]
pub enum SessionCheck {
    /// No session cookie.
    None,
    /// A cookie that is unreadable, expired, revoked or inactive: "not authenticated", and the
    /// cookie should be cleared.
    Invalid,
    /// A live session; `renewed` means its tokens changed and the cookie must be rewritten.
    /// `prepared` is what its response carries, when already built (see `state::memo`).
    Valid {
        session: Arc<Session>,
        renewed: bool,
        prepared: Option<Arc<Prepared>>,
    },
    /// The provider cannot be reached to verify the session.
    Unverifiable,
}

/// The answer to a forward-auth check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Authenticated and authorised: 200 with identity headers.
    Allow,
    /// An unauthenticated request for a skip path: 200 without identity headers.
    Anonymous,
    /// Not authenticated: 401 for nginx and API clients, a login redirect for browsers.
    Login,
    /// Authenticated but not in an allowed group.
    Forbidden,
    /// The provider is unreachable and the session cannot be verified.
    Unavailable,
    /// The reverse proxy did not say which URL it is asking about.
    Misconfigured,
}

/// Decides a forward-auth check.
pub fn decide(req: &AuthRequest<'_>, check: &SessionCheck, app: &AppSpec, now: i64) -> Decision {
    let url = match &req.original {
        Ok(u) => Some(u),
        Err(ForwardError::Missing | ForwardError::Unparsable) => return Decision::Misconfigured,
        // Forwarding headers of an untrusted peer are ignored: no URL, so no skip paths.
        Err(ForwardError::Untrusted) => None,
    };
    // Only apps with skip paths need the URL parsed. A path sent with a `..` segment never
    // matches one (the application may not resolve it as the proxy did).
    let skipped = (app.has_skip_paths()
        && url.is_some_and(|u| !has_dot_dot_segment(u.raw_path()))
        && url.and_then(|u| u.url()).is_some_and(|u| app.is_skipped(u)))
        || (req.preflight && app.allow_cors_preflight);
    match check {
        SessionCheck::Valid { session, .. } if session.expires_at > now => {
            if app.allows_groups(&session.identity.groups) {
                Decision::Allow
            } else if skipped {
                Decision::Anonymous
            } else {
                Decision::Forbidden
            }
        }
        _ if skipped => Decision::Anonymous,
        SessionCheck::Unverifiable => Decision::Unavailable,
        _ => Decision::Login,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::app::Mode;
    use crate::core::identity::Identity;
    use crate::core::paths::Flavour;
    use crate::core::request::OriginalUrl;
    use url::Url;

    fn app(groups: &[&str]) -> AppSpec {
        AppSpec::new(
            "app".into(),
            "https://app.example.com",
            Mode::ForwardSingle,
            "",
            "^/public/",
            groups.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    fn req(url: Result<&str, ForwardError>) -> AuthRequest<'static> {
        AuthRequest {
            flavour: Flavour::Nginx,
            original: url.map(|u| OriginalUrl::from_url(Url::parse(u).unwrap())),
            navigation: true,
            preflight: false,
        }
    }

    fn valid(groups: &[&str], expires_at: i64) -> SessionCheck {
        SessionCheck::Valid {
            session: Arc::new(Session {
                version: 1,
                identity: Identity {
                    sub: "u".into(),
                    groups: groups.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                },
                access_token: "t".into(),
                access_expires_at: expires_at,
                access_issued_at: 0,
                refresh_token: None,
                id_token: None,
                expires_at,
            }),
            renewed: false,
            prepared: None,
        }
    }

    #[test]
    fn table() {
        use Decision::*;
        let private = Ok("https://app.example.com/private");
        let public = Ok("https://app.example.com/public/x");
        let sneaky = Ok("https://app.example.com/public/../private");
        let cases: Vec<(&str, AuthRequest<'_>, SessionCheck, &[&str], Decision)> = vec![
            ("no cookie", req(private), SessionCheck::None, &[], Login),
            (
                "bad cookie",
                req(private),
                SessionCheck::Invalid,
                &[],
                Login,
            ),
            ("valid", req(private), valid(&[], 2000), &[], Allow),
            ("expired session", req(private), valid(&[], 999), &[], Login),
            (
                "skip path, no cookie",
                req(public),
                SessionCheck::None,
                &[],
                Anonymous,
            ),
            (
                "skip path, bad cookie",
                req(public),
                SessionCheck::Invalid,
                &[],
                Anonymous,
            ),
            (
                "dot-segment escape",
                req(sneaky),
                SessionCheck::None,
                &[],
                Login,
            ),
            (
                "provider down",
                req(private),
                SessionCheck::Unverifiable,
                &[],
                Unavailable,
            ),
            (
                "provider down, skip path",
                req(public),
                SessionCheck::Unverifiable,
                &[],
                Anonymous,
            ),
            (
                "group ok",
                req(private),
                valid(&["admins", "x"], 2000),
                &["admins"],
                Allow,
            ),
            (
                "group missing",
                req(private),
                valid(&["users"], 2000),
                &["admins"],
                Forbidden,
            ),
            (
                "group missing, skip path",
                req(public),
                valid(&["users"], 2000),
                &["admins"],
                Anonymous,
            ),
            (
                "no url",
                req(Err(ForwardError::Missing)),
                valid(&[], 2000),
                &[],
                Misconfigured,
            ),
            (
                "bad url",
                req(Err(ForwardError::Unparsable)),
                SessionCheck::None,
                &[],
                Misconfigured,
            ),
            (
                "untrusted, valid",
                req(Err(ForwardError::Untrusted)),
                valid(&[], 2000),
                &[],
                Allow,
            ),
            (
                "untrusted, none",
                req(Err(ForwardError::Untrusted)),
                SessionCheck::None,
                &[],
                Login,
            ),
        ];
        for (name, r, check, groups, want) in cases {
            assert_eq!(decide(&r, &check, &app(groups), 1000), want, "{name}");
        }
    }

    #[test]
    fn cors_preflights_pass_only_when_allowed() {
        let mut r = req(Ok("https://app.example.com/api"));
        r.preflight = true;
        let mut a = app(&[]);
        assert_eq!(decide(&r, &SessionCheck::None, &a, 1000), Decision::Login);
        a.allow_cors_preflight = true;
        assert_eq!(
            decide(&r, &SessionCheck::None, &a, 1000),
            Decision::Anonymous
        );
        r.preflight = false;
        assert_eq!(decide(&r, &SessionCheck::None, &a, 1000), Decision::Login);
    }
}
