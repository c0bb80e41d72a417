//! `cookie_unseal`: the session cookie codec — `read_session_cookies` (every `Cookie` header,
//! chunks `name`, `name_1`, …), `open_session` and `Sealer::unseal` — on random cookies, on
//! real sealed sessions (one and several chunks) with fuzzer-chosen edits, and on sessions
//! built from the input and sealed with `session_set_cookies`.
//!
//! Input: the first byte picks the mode (random / tampered / round trip), the rest drives it.
//!
//! Invariants: random bytes never open as a session and never unseal; an edited cookie opens
//! exactly when the sealed value it yields is the original one (and then as the original
//! session); a sealed session always opens as itself; at most `MAX_CHUNKS` chunks are counted.

use std::sync::{Arc, OnceLock};

use ak_outpost::core::app::{AppExtras, AppSpec, Mode, Site, cookie_name};
use ak_outpost::core::identity::Identity;
use ak_outpost::core::seal::Sealer;
use ak_outpost::core::session::{
    CookieState, MAX_CHUNKS, Session, SessionCookies, open_session, read_cookie,
    read_session_cookies, session_set_cookies,
};
use http::header::{COOKIE, HeaderMap, HeaderValue};

/// "Now" for every check; the sealed sessions expire long after it.
pub const NOW: i64 = 1_700_000_000;

/// The application whose cookies are read.
pub fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let spec = AppSpec::new(
            "fuzz".into(),
            "https://app.example.com",
            Mode::ForwardSingle,
            "",
            "",
            vec![],
        )
        .unwrap_or_else(|e| panic!("fuzz app: {e:?}"));
        Site {
            spec,
            sealer: Arc::new(Sealer::new(
                b"fuzz-secret-fuzz-secret-fuzz-secret!",
                "session",
            )),
            cookie_name: cookie_name("fuzz-client"),
            provider_name: "fuzz".into(),
            app_slug: "fuzz".into(),
            extras: AppExtras::default(),
        }
    })
}

/// A session with `groups` groups of 24 characters (60 make a three-chunk cookie).
pub fn session(groups: usize) -> Session {
    Session {
        version: 1,
        identity: Identity {
            sub: "8c2b1f0e-user".into(),
            username: "alice".into(),
            email: "alice@example.com".into(),
            name: "Alice Example".into(),
            groups: (0..groups)
                .map(|i| format!("group-number-{i:04}-abcdefg"))
                .collect(),
            ..Default::default()
        },
        access_token: "a".repeat(43),
        access_expires_at: NOW + 300,
        access_issued_at: NOW,
        refresh_token: Some("r".repeat(64)),
        id_token: None,
        expires_at: NOW + 86400,
    }
}

/// A session's `Cookie` header line, as a browser sends the cookies `session_set_cookies`
/// set: `name=v; name_1=v1; …`.
pub fn cookie_line(site: &Site, s: &Session) -> String {
    session_set_cookies(site, s, NOW, 0)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sealed fixtures: (session, its cookie line, its sealed value).
fn sealed() -> &'static [(Session, String, Vec<u8>)] {
    static SEALED: OnceLock<Vec<(Session, String, Vec<u8>)>> = OnceLock::new();
    SEALED.get_or_init(|| {
        [0, 60, 200]
            .into_iter()
            .map(|groups| {
                let s = session(groups);
                let line = cookie_line(site(), &s);
                let mut h = HeaderMap::new();
                h.append(
                    COOKIE,
                    HeaderValue::from_str(&line).unwrap_or_else(|e| panic!("{e}")),
                );
                let value = read_session_cookies(&h, &site().cookie_name)
                    .value
                    .map(|v| v.into_owned())
                    .unwrap_or_default();
                (s, line, value)
            })
            .collect()
    })
}

/// Two sessions are the same when they serialise the same.
pub fn same(a: &Session, b: &Session) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

fn open(h: &HeaderMap) -> (SessionCookies<'_>, CookieState) {
    let site = site();
    let cookies = read_session_cookies(h, &site.cookie_name);
    assert!(cookies.chunks_sent <= MAX_CHUNKS);
    let state = open_session(site, &cookies, NOW);
    (cookies, state)
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => random(rest),
        1 => tampered(mode, rest),
        _ => round_trip(rest),
    }
}

/// Random `Cookie` headers (one per line) and random sealed values.
fn random(data: &[u8]) {
    let mut h = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            h.append(COOKIE, v);
        }
    }
    let (cookies, state) = open(&h);
    assert!(
        !matches!(state, CookieState::Present(_)),
        "random cookies opened as a session: {data:?}"
    );
    if cookies.value.is_none() {
        assert!(matches!(state, CookieState::Absent));
    }
    let _ = read_cookie(&h, "fuzz");
    let site = site();
    assert_eq!(site.sealer.unseal(site.cookie_name.as_bytes(), data), None);
    assert_eq!(site.sealer.unseal(b"", data), None);
}

/// A real cookie line with edits: each 4 input bytes are (op, position, position, byte).
fn tampered(mode: u8, edits: &[u8]) {
    let fixtures = sealed();
    let (session, line, original) = &fixtures[usize::from(mode / 3) % fixtures.len()];
    let mut bytes = line.clone().into_bytes();
    for e in edits.chunks_exact(4) {
        let pos = usize::from(u16::from_le_bytes([e[1], e[2]]));
        let at = if bytes.is_empty() {
            0
        } else {
            pos % bytes.len()
        };
        match e[0] % 5 {
            0 if !bytes.is_empty() => bytes[at] = e[3],
            1 if !bytes.is_empty() => bytes[at] ^= 1 << (e[3] % 8),
            2 => bytes.insert(at.min(bytes.len()), e[3]),
            3 if !bytes.is_empty() => {
                bytes.remove(at);
            }
            4 => bytes.truncate(pos % (bytes.len() + 1)),
            _ => {}
        }
    }
    let mut h = HeaderMap::new();
    for part in bytes.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            h.append(COOKIE, v);
        }
    }
    let (cookies, state) = open(&h);
    let intact = cookies
        .value
        .as_deref()
        .is_some_and(|v| v.trim_ascii() == original.as_slice());
    match state {
        CookieState::Present(s) => {
            assert!(
                intact,
                "a tampered cookie opened: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert!(same(&s, session), "opened as another session");
        }
        _ => assert!(
            !intact,
            "the intact sealed value did not open: {:?}",
            String::from_utf8_lossy(&bytes)
        ),
    }
}

/// A session made from the input, sealed and read back.
fn round_trip(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\u{0}');
    let mut next = || fields.next().unwrap_or_default().to_string();
    let sub = next();
    if sub.is_empty() {
        return;
    }
    let mut s = session(0);
    s.identity.sub = sub;
    s.identity.username = next();
    s.identity.email = next();
    s.access_token = next();
    s.identity.groups = next()
        .split(',')
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    let id_token = next();
    s.id_token = (!id_token.is_empty()).then_some(id_token);
    let line = cookie_line(site(), &s);
    let Ok(v) = HeaderValue::from_str(&line) else {
        panic!("unsendable cookie line {line:?}");
    };
    let mut h = HeaderMap::new();
    h.append(COOKIE, v);
    match open(&h).1 {
        CookieState::Present(back) => assert!(same(&back, &s), "round trip changed the session"),
        // More than MAX_CHUNKS chunks cannot be read back: the caller shrinks sessions first.
        other => assert!(
            s.sealed_len() > MAX_CHUNKS * ak_outpost::core::session::CHUNK_LEN,
            "a sealed session did not open: {other:?}"
        ),
    }
}
