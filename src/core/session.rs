//! Sessions live entirely in a sealed cookie: no server-side store, so a restart or another
//! replica with the same secret reads the same session. A session too large for one cookie is
//! split into numbered cookies (`name`, `name_1`, `name_2`, …). A pure codec: whether the
//! tokens inside are still live is the provider's question, asked by `http::handlers::auth`.

use std::borrow::Cow;

use cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use http::header::{COOKIE, HeaderMap, HeaderValue};
use memchr::memmem::Finder;
use serde::{Deserialize, Serialize};

use crate::core::app::{CookieName, Site};
use crate::core::identity::Identity;
use crate::core::token::TokenSet;

/// Bytes of sealed value per cookie; with name and attributes each cookie stays under 4 KB.
pub const CHUNK_LEN: usize = 3800;
/// Chunks read at most; more is treated as garbage.
pub const MAX_CHUNKS: usize = 8;
const SESSION_VERSION: u8 = 1;

/// One logged-in browser.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "v")]
    pub version: u8,
    #[serde(rename = "i")]
    pub identity: Identity,
    #[serde(rename = "at")]
    pub access_token: String,
    /// Unix seconds when the access token expires.
    #[serde(rename = "ax")]
    pub access_expires_at: i64,
    /// Unix seconds when the access token was issued (for the renewal margin).
    #[serde(rename = "ai")]
    pub access_issued_at: i64,
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(rename = "it", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Unix seconds when the session ends, whatever the tokens say.
    #[serde(rename = "ex")]
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("identity", &self.identity)
            .field("access_expires_at", &self.access_expires_at)
            .field("expires_at", &self.expires_at)
            .field("tokens", &"<redacted>")
            .finish()
    }
}

impl Session {
    pub fn new(identity: Identity, tokens: &TokenSet, now: i64, lifetime_secs: i64) -> Session {
        // Without a refresh token the session cannot outlive its access token.
        let expires_at = if tokens.refresh_token.is_some() {
            now + lifetime_secs
        } else {
            tokens.expires_at.min(now + lifetime_secs)
        };
        Session {
            version: SESSION_VERSION,
            identity,
            access_token: tokens.access_token.clone(),
            access_expires_at: tokens.expires_at,
            access_issued_at: now,
            refresh_token: tokens.refresh_token.clone(),
            id_token: tokens.id_token.clone(),
            expires_at,
        }
    }

    /// Keeps the cookie small: when the session would not fit in one cookie, the ID token
    /// (only needed as a hint at sign-out, and often the largest part) is dropped first.
    pub fn shrink_to_fit(&mut self) {
        // When the access token is itself a JWT (authentik), it serves as X-authentik-jwt and
        // as the logout hint, as authentik's outpost uses it; the ID token is redundant.
        if self.id_token.is_some() && (is_jwt(&self.access_token) || self.sealed_len() > CHUNK_LEN)
        {
            self.id_token = None;
        }
    }

    /// The hint for the provider's end-session endpoint.
    pub fn logout_hint(&self) -> Option<&str> {
        self.id_token
            .as_deref()
            .or_else(|| is_jwt(&self.access_token).then_some(self.access_token.as_str()))
    }

    /// Length of the sealed cookie value (base64 of nonce + JSON + tag).
    pub fn sealed_len(&self) -> usize {
        let json = serde_json::to_vec(self).map(|v| v.len()).unwrap_or(0);
        (12 + json + 16).div_ceil(3) * 4
    }

    /// The token shown as `X-authentik-jwt`: the access token when it is a JWT (authentik),
    /// else the ID token.
    pub fn jwt(&self) -> &str {
        if is_jwt(&self.access_token) {
            &self.access_token
        } else {
            self.id_token.as_deref().unwrap_or_default()
        }
    }

    /// Whether the access token should be renewed now: within a quarter of its lifetime
    /// (at most a minute) of expiring.
    pub fn needs_renewal(&self, now: i64) -> bool {
        let lifetime = (self.access_expires_at - self.access_issued_at).max(0);
        let margin = (lifetime / 4).min(60);
        now >= self.access_expires_at - margin
    }
}

/// A compact JWS: three dot-separated parts.
fn is_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

/// What the request's cookies say about the session.
#[derive(Debug)]
pub enum CookieState {
    /// No session cookie at all.
    Absent,
    /// A session cookie that cannot be opened, is expired, or is not ours.
    Invalid,
    Present(Box<Session>),
}

/// Session cookies of one request: the joined value and how many chunk cookies were sent.
pub struct SessionCookies<'a> {
    /// The sealed value's bytes, borrowed from the header when the session fits in one
    /// cookie. Not checked to be text: unsealing accepts only base64url.
    pub value: Option<Cow<'a, [u8]>>,
    pub chunks_sent: usize,
}

/// The `name=value` pairs of every `Cookie` header whose name starts with what `prefix`
/// finds, as bytes (spaces around a pair and quotes around a value removed). Bytes, not
/// text: the lines can be long (a session cookie is 1–4 KB, a browser sends every app's
/// cookies for the host) and are read on every check, and a value is only ever compared or
/// unsealed. The line is searched for the prefix (vectorised, not a step per pair); a find
/// is a pair's start only where the line or a `;` comes before it, spaces aside (elsewhere
/// it is inside another cookie's name or value, which hold no `;`). Either way the search
/// goes on after the pair's `;`, so a value is passed over once, by `memchr`.
fn cookie_pairs<'h>(
    headers: &'h HeaderMap,
    prefix: &Finder<'_>,
) -> impl Iterator<Item = (&'h [u8], &'h [u8])> {
    headers.get_all(COOKIE).into_iter().flat_map(move |h| {
        let line = h.as_bytes();
        let mut pos = 0;
        std::iter::from_fn(move || {
            loop {
                let rest = line.get(pos..).filter(|r| !r.is_empty())?;
                // Most often the line starts with ours (or is only ours): no search then.
                let spaces = rest.len() - rest.trim_ascii_start().len();
                let at = if rest[spaces..].starts_with(prefix.needle()) {
                    pos + spaces
                } else {
                    pos + prefix.find(rest)?
                };
                let end = memchr::memchr(b';', &line[at..]).map_or(line.len(), |i| at + i);
                pos = end + 1;
                let before = line[..at].trim_ascii_end();
                if !(before.is_empty() || before.ends_with(b";")) {
                    continue;
                }
                let pair = line[at..end].trim_ascii_end();
                let Some(eq) = memchr::memchr(b'=', pair) else {
                    continue;
                };
                let value = pair[eq + 1..]
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(&pair[eq + 1..]);
                return Some((&pair[..eq], value));
            }
        })
    })
}

/// The chunk index `i` of a cookie named `{name}_{i}` (1 ≤ i < MAX_CHUNKS, no leading zero).
fn chunk_index(cookie: &[u8], name: &str) -> Option<usize> {
    let n = cookie.strip_prefix(name.as_bytes())?.strip_prefix(b"_")?;
    match n {
        [d @ b'1'..=b'9'] => Some(usize::from(d - b'0')),
        [d @ b'1'..=b'9', e @ b'0'..=b'9'] => {
            Some(usize::from(d - b'0') * 10 + usize::from(e - b'0'))
        }
        _ => None,
    }
    .filter(|i| *i < MAX_CHUNKS)
}

/// Collects `name`, `name_1`, `name_2`, … from every `Cookie` header.
pub fn read_session_cookies<'a>(headers: &'a HeaderMap, name: &CookieName) -> SessionCookies<'a> {
    let mut parts: [Option<&[u8]>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let mut sent = 0;
    // Every cookie of ours is named `name` or `name_{i}`.
    for (k, v) in cookie_pairs(headers, name.finder()) {
        let idx = if k == name.as_bytes() {
            0
        } else if let Some(i) = chunk_index(k, name) {
            i
        } else {
            continue;
        };
        if parts[idx].is_none() {
            parts[idx] = Some(v);
            sent = sent.max(idx + 1);
        }
    }
    let value = parts[0].map(|first| match parts[1] {
        None => Cow::Borrowed(first),
        Some(_) => {
            let mut s = first.to_vec();
            for p in parts.iter().skip(1) {
                match p {
                    Some(p) => s.extend_from_slice(p),
                    None => break,
                }
            }
            Cow::Owned(s)
        }
    });
    SessionCookies {
        value,
        chunks_sent: sent,
    }
}

/// Reads a single named cookie (`None` unless its value is text).
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let finder = Finder::new(name.as_bytes());
    cookie_pairs(headers, &finder)
        .find(|(k, _)| *k == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Opens the session from a request, checking version and expiry.
pub fn open_session(app: &Site, cookies: &SessionCookies<'_>, now: i64) -> CookieState {
    let Some(value) = cookies.value.as_deref() else {
        return CookieState::Absent;
    };
    let Some(plain) = app.sealer.unseal(app.cookie_name.as_bytes(), value) else {
        return CookieState::Invalid;
    };
    match serde_json::from_slice::<Session>(&plain) {
        Ok(s)
            if s.version == SESSION_VERSION && s.expires_at > now && !s.identity.sub.is_empty() =>
        {
            CookieState::Present(Box::new(s))
        }
        _ => CookieState::Invalid,
    }
}

/// `Set-Cookie` values that store `session`, and expire chunks the browser still has from a
/// larger earlier session.
pub fn session_set_cookies(
    app: &Site,
    session: &Session,
    now: i64,
    chunks_sent: usize,
) -> Vec<HeaderValue> {
    let json = serde_json::to_vec(session).unwrap_or_default();
    let sealed = app.sealer.seal(app.cookie_name.as_bytes(), &json);
    let max_age = (session.expires_at - now).max(1);
    let mut out = Vec::new();
    let mut written = 0;
    for (i, chunk) in sealed.as_bytes().chunks(CHUNK_LEN).enumerate() {
        // base64url text is ASCII, so every chunk is valid UTF-8.
        let text = std::str::from_utf8(chunk).unwrap_or_default();
        out.extend(cookie_header(
            app,
            &chunk_name(&app.cookie_name, i),
            text,
            Some(max_age),
        ));
        written = i + 1;
    }
    for i in written..chunks_sent {
        out.extend(cookie_header(
            app,
            &chunk_name(&app.cookie_name, i),
            "",
            Some(0),
        ));
    }
    out
}

/// `Set-Cookie` values that delete the session (every chunk the browser sent, at least one).
pub fn clear_session_cookies(app: &Site, chunks_sent: usize) -> Vec<HeaderValue> {
    (0..chunks_sent.max(1))
        .filter_map(|i| cookie_header(app, &chunk_name(&app.cookie_name, i), "", Some(0)))
        .collect()
}

pub fn chunk_name(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// One `Set-Cookie` value with the application's attributes: Path=/, HttpOnly, SameSite=Lax,
/// Secure for https external hosts, Domain only in forward_domain mode. `max_age` 0 deletes.
pub fn cookie_header(
    app: &Site,
    name: &str,
    value: &str,
    max_age: Option<i64>,
) -> Option<HeaderValue> {
    let mut c = Cookie::new(name.to_string(), value.to_string());
    c.set_path("/");
    c.set_http_only(true);
    c.set_same_site(SameSite::Lax);
    c.set_secure(app.secure_cookies());
    if !app.spec.cookie_domain.is_empty() {
        c.set_domain(app.spec.cookie_domain.clone());
    }
    if let Some(age) = max_age {
        c.set_max_age(CookieDuration::seconds(age));
        if age == 0 {
            c.set_expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
        }
    }
    HeaderValue::from_str(&c.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every `name=value` pair of every `Cookie` header, split the plain way (at each `;`,
    /// spaces trimmed, quotes around a value removed): what [`cookie_pairs`] must agree with.
    fn every_pair(headers: &HeaderMap) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        for h in headers.get_all(COOKIE) {
            for pair in h.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                if let Some(eq) = pair.iter().position(|b| *b == b'=') {
                    let v = &pair[eq + 1..];
                    let v = v
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(v);
                    out.push((&pair[..eq], v));
                }
            }
        }
        out
    }

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        h
    }

    #[test]
    fn chunks_are_joined_in_order_and_counted() {
        let h = headers(&["x=1; n_2=c; n=a", "n_1=b; n_9=zz; n_01=no"]);
        let c = read_session_cookies(&h, &"n".into());
        assert_eq!(c.value.as_deref(), Some(&b"abc"[..]));
        assert_eq!(c.chunks_sent, 3);
        let h = headers(&["n_1=b"]);
        let c = read_session_cookies(&h, &"n".into());
        assert_eq!(c.value, None);
        assert_eq!(c.chunks_sent, 2);
        let h = headers(&["n=a; n_2=c"]);
        let c = read_session_cookies(&h, &"n".into());
        assert_eq!(c.value.as_deref(), Some(&b"a"[..]), "a gap ends the value");
    }

    #[test]
    fn cookie_lines_are_split_like_browsers_send_them() {
        let mut h = headers(&[" a=1 ;b=\"2\";;  c = ; noequals; d=x=y;", "e=\"half"]);
        h.append(COOKIE, HeaderValue::from_bytes(b"f=\xff; g=ok").unwrap());
        let pairs = every_pair(&h);
        let want: Vec<(&[u8], &[u8])> = vec![
            (b"a", b"1"),
            (b"b", b"2"),
            (b"c ", b""),
            (b"d", b"x=y"),
            (b"e", b"\"half"),
            (b"f", b"\xff"),
            (b"g", b"ok"),
        ];
        assert_eq!(pairs, want);
        for (k, v) in &want {
            let name = Finder::new(k);
            let found: Vec<_> = cookie_pairs(&h, &name).filter(|(n, _)| n == k).collect();
            assert_eq!(found, vec![(*k, *v)], "{:?}", String::from_utf8_lossy(k));
        }
        assert_eq!(read_cookie(&h, "d"), Some("x=y"));
        assert_eq!(read_cookie(&h, "f"), None, "not text");
        assert_eq!(read_cookie(&h, "g"), Some("ok"));
        assert_eq!(read_cookie(&h, "c "), Some(""));
        assert_eq!(read_cookie(&h, "zz"), None);
        assert_eq!(MAX_CHUNKS, 8, "the table below assumes 8 chunks");
        for (name, want) in [
            (&b"n_1"[..], Some(1)),
            (b"n_7", Some(7)),
            (b"n_8", None),
            (b"n_19", None),
            (b"n_0", None),
            (b"n_01", None),
            (b"n_", None),
            (b"n_1x", None),
            (b"n_123", None),
            (b"m_1", None),
            (b"n1", None),
        ] {
            assert_eq!(chunk_index(name, "n"), want, "{name:?}");
        }
    }

    #[test]
    fn identity_from_claims() {
        let c = json!({"sub": "u1", "preferred_username": "alice", "email": "a@x",
            "name": "Alice", "groups": ["a", "b", 3, null], "entitlements": "one", "sid": "s"});
        let id = Identity::from_claims(c.as_object().unwrap()).unwrap();
        assert_eq!(id.username, "alice");
        assert_eq!(id.groups, vec!["a", "b", "3"]);
        assert_eq!(id.entitlements, vec!["one"]);
        assert_eq!(id.sid.as_deref(), Some("s"));
        assert!(Identity::from_claims(json!({"sub": ""}).as_object().unwrap()).is_none());
        assert!(Identity::from_claims(json!({"sub": 5}).as_object().unwrap()).is_none());
    }

    #[test]
    fn userinfo_fills_gaps_for_the_same_subject_only() {
        let mut id = Identity {
            sub: "u1".into(),
            ..Default::default()
        };
        id.merge_userinfo(json!({"sub": "u2", "email": "evil@x"}).as_object().unwrap());
        assert_eq!(id.email, "");
        id.merge_userinfo(
            json!({"sub": "u1", "email": "a@x", "groups": ["g"]})
                .as_object()
                .unwrap(),
        );
        assert_eq!(id.email, "a@x");
        assert_eq!(id.groups, vec!["g"]);
    }

    #[test]
    fn large_sessions_drop_the_id_token_first() {
        let mut s = Session {
            version: 1,
            identity: Identity {
                sub: "u".into(),
                groups: (0..60).map(|i| format!("group-number-{i:04}")).collect(),
                ..Default::default()
            },
            access_token: "a".repeat(43),
            access_expires_at: 2,
            access_issued_at: 1,
            refresh_token: None,
            id_token: Some("x".repeat(2500)),
            expires_at: 3,
        };
        assert!(s.sealed_len() > CHUNK_LEN);
        s.shrink_to_fit();
        assert!(s.id_token.is_none());
        assert!(s.sealed_len() < CHUNK_LEN);
        let mut small = Session {
            id_token: Some("x".repeat(100)),
            ..s.clone()
        };
        small.identity.groups.clear();
        small.shrink_to_fit();
        assert!(small.id_token.is_some(), "small sessions keep it");
    }

    #[test]
    fn renewal_margin() {
        let s = Session {
            version: 1,
            identity: Identity::default(),
            access_token: "t".into(),
            access_expires_at: 1000 + 3600,
            access_issued_at: 1000,
            refresh_token: None,
            id_token: None,
            expires_at: 99999,
        };
        assert!(!s.needs_renewal(1000));
        assert!(!s.needs_renewal(1000 + 3600 - 61));
        assert!(s.needs_renewal(1000 + 3600 - 60));
        let short = Session {
            access_expires_at: 1020,
            ..s
        };
        assert!(!short.needs_renewal(1014));
        assert!(short.needs_renewal(1015));
    }

    mod properties {
        use std::sync::Arc;

        use proptest::prelude::*;

        use super::*;
        use crate::core::app::{AppExtras, AppSpec, Mode};
        use crate::core::seal::Sealer;

        const NOW: i64 = 1_700_000_000;

        fn site() -> Site {
            let spec = AppSpec::new(
                "t".into(),
                "https://app.example.com",
                Mode::ForwardSingle,
                "",
                "",
                vec![],
            )
            .unwrap();
            Site {
                spec,
                sealer: Arc::new(Sealer::new(&[7; 32], "session")),
                cookie_name: "authentik_proxy_948fe603".into(),
                provider_name: "p".into(),
                app_slug: "a".into(),
                extras: AppExtras::default(),
            }
        }

        /// Text of any characters (controls, quotes, non-BMP included).
        fn text(max: usize) -> impl Strategy<Value = String> {
            proptest::collection::vec(any::<char>(), 0..=max).prop_map(String::from_iter)
        }

        /// Sessions from tiny to several chunks (a long ID token or many groups), with any
        /// characters in the identity.
        fn session() -> impl Strategy<Value = Session> {
            let identity = (
                text(20).prop_filter("sub is required", |s| !s.is_empty()),
                text(20),
                text(30),
                proptest::collection::vec(text(24), 0..120),
                proptest::option::of(text(10)),
            )
                .prop_map(|(sub, username, email, groups, sid)| Identity {
                    sub,
                    username,
                    email,
                    groups,
                    sid,
                    ..Default::default()
                });
            (
                identity,
                "[A-Za-z0-9._-]{1,1200}",
                proptest::option::of("[A-Za-z0-9._-]{1,200}"),
                proptest::option::of("[A-Za-z0-9._-]{1,9000}"),
                1i64..10_000_000,
            )
                .prop_map(|(identity, at, rt, it, ttl)| Session {
                    version: 1,
                    identity,
                    access_token: at,
                    access_expires_at: NOW + 300,
                    access_issued_at: NOW,
                    refresh_token: rt,
                    id_token: it,
                    expires_at: NOW + ttl,
                })
                .prop_filter("must fit in MAX_CHUNKS cookies", |s| {
                    s.sealed_len() <= MAX_CHUNKS * CHUNK_LEN
                })
        }

        /// The `name=value` parts of `Set-Cookie` values.
        fn pairs(set: &[HeaderValue]) -> Vec<String> {
            set.iter()
                .map(|h| h.to_str().unwrap().split(';').next().unwrap().to_string())
                .collect()
        }

        fn same(a: &Session, b: &Session) -> bool {
            serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
        }

        /// The joined sealed value of `pairs`, as `read_session_cookies` reads it.
        fn sealed_of(pairs: &[String]) -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|p| p.split_once('=').unwrap().1.bytes())
                .collect()
        }

        /// `sealed` cut into chunk cookies as `session_set_cookies` does, in one header.
        fn header_for(site: &Site, sealed: &[u8]) -> HeaderMap {
            let mut line = Vec::new();
            for (i, chunk) in sealed.chunks(CHUNK_LEN).enumerate() {
                if i > 0 {
                    line.extend_from_slice(b"; ");
                }
                line.extend_from_slice(chunk_name(&site.cookie_name, i).as_bytes());
                line.push(b'=');
                line.extend_from_slice(chunk);
            }
            let mut h = HeaderMap::new();
            h.append(COOKIE, HeaderValue::from_bytes(&line).unwrap());
            h
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            /// Any session comes back whole, whatever the order and the grouping of its chunk
            /// cookies in `Cookie` headers.
            #[test]
            fn sessions_round_trip(s in session(), order in any::<u64>(), split in any::<u64>()) {
                let site = site();
                let set = session_set_cookies(&site, &s, NOW, 0);
                prop_assert!(!set.is_empty() && set.len() <= MAX_CHUNKS);
                let mut pairs = pairs(&set);
                // Browsers send cookies in any order, in one header or (HTTP/2) several.
                let n = pairs.len() as u64;
                pairs.rotate_left((order % n) as usize);
                let mut h = HeaderMap::new();
                let cut = (split % (n + 1)) as usize;
                for part in [&pairs[..cut], &pairs[cut..]] {
                    if !part.is_empty() {
                        h.append(COOKIE, HeaderValue::from_str(&part.join("; ")).unwrap());
                    }
                }
                let cookies = read_session_cookies(&h, &site.cookie_name);
                prop_assert_eq!(cookies.chunks_sent, set.len());
                match open_session(&site, &cookies, NOW) {
                    CookieState::Present(back) => prop_assert!(same(&back, &s)),
                    other => prop_assert!(false, "did not open: {:?}", other),
                }
                prop_assert!(matches!(
                    open_session(&site, &cookies, s.expires_at),
                    CookieState::Invalid
                ), "expired sessions do not open");
            }

            /// Reading our cookies only where the name is found finds what reading every pair
            /// finds: the same chunks, first of each name winning. Also for a name that can
            /// overlap itself (`ab_ab`) among bytes that spell it and its chunks' names.
            #[test]
            fn session_cookies_are_found_among_any_pairs(
                name in prop_oneof![Just("n"), Just("ab_ab")],
                lines in proptest::collection::vec("[ab_n0-9x=; \t\"]{0,60}", 1..4),
            ) {
                let mut h = HeaderMap::new();
                for l in &lines {
                    h.append(COOKIE, HeaderValue::from_str(l).unwrap());
                }
                let mut want: [Option<&[u8]>; MAX_CHUNKS] = [None; MAX_CHUNKS];
                for (k, v) in every_pair(&h) {
                    let idx = if k == name.as_bytes() { Some(0) } else { chunk_index(k, name) };
                    if let Some(i) = idx {
                        want[i].get_or_insert(v);
                    }
                }
                let got = read_session_cookies(&h, &name.into());
                let sent = want.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
                prop_assert_eq!(got.chunks_sent, sent);
                let joined = want[0].map(|first| {
                    let mut v = first.to_vec();
                    want[1..].iter().map_while(|p| *p).for_each(|p| v.extend_from_slice(p));
                    v
                });
                prop_assert_eq!(got.value.as_deref(), joined.as_deref());
                let first = every_pair(&h)
                    .into_iter()
                    .find(|(k, _)| *k == name.as_bytes())
                    .map(|(_, v)| v);
                prop_assert_eq!(
                    read_cookie(&h, name),
                    first.and_then(|v| std::str::from_utf8(v).ok())
                );
            }

            /// Any change of one byte of the sealed value, in any chunk, makes it Invalid.
            #[test]
            fn one_byte_changed_is_invalid(
                s in session(),
                at in any::<prop::sample::Index>(),
                byte in prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff],
            ) {
                let site = site();
                let mut sealed = sealed_of(&pairs(&session_set_cookies(&site, &s, NOW, 0)));
                let i = at.index(sealed.len());
                prop_assume!(sealed[i] != byte);
                // Unchanged, it opens: the change is what is refused.
                let h = header_for(&site, &sealed);
                let intact = read_session_cookies(&h, &site.cookie_name);
                prop_assert!(matches!(open_session(&site, &intact, NOW), CookieState::Present(_)));
                sealed[i] = byte;
                prop_assert_eq!(site.sealer.unseal(site.cookie_name.as_bytes(), &sealed), None);
                let h = header_for(&site, &sealed);
                let cookies = read_session_cookies(&h, &site.cookie_name);
                let state = open_session(&site, &cookies, NOW);
                prop_assert!(matches!(state, CookieState::Invalid), "{:?}", state);
            }
        }
    }
}
