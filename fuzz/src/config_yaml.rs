//! `config_yaml`: the standalone configuration — the YAML text read into `RawConfig` (as
//! `Config::from_yaml` does) and validated by `Config::from_raw`.
//!
//! `from_yaml` is exactly those two steps; the target takes them apart only to keep the
//! fuzzer off the file system: `file://` indirections and TLS files are pointed at a path that
//! does not exist (a fuzzer that found `file:///dev/zero` would hang, not find a bug).
//!
//! Invariants: a refused configuration lists at least one problem; an accepted one has a
//! secret of at least `MIN_SECRET_LEN` bytes, a provider issuer that is an http(s) URL, scopes
//! with `openid`, a session lifetime of at least a minute, and at least one application, each
//! with an http(s) external host without credentials, a unique host key and name, and (in
//! forward_domain) a cookie domain with a dot that contains the external host on a label
//! boundary.

use ak_outpost::core::app::Mode;
use ak_outpost::source::yaml::{Config, MIN_SECRET_LEN, RawConfig};

const NOWHERE: &str = "file:///nonexistent/ak-outpost-fuzz";

/// Points an indirection away from the file system.
fn off_disk(v: &mut Option<String>) {
    if v.as_deref().is_some_and(|s| s.starts_with("file://")) {
        *v = Some(NOWHERE.into());
    }
}

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut raw) = serde_yaml::from_str::<RawConfig>(text) else {
        return;
    };
    off_disk(&mut raw.secret);
    if let Some(p) = raw.provider.as_mut() {
        off_disk(&mut p.client_id);
        off_disk(&mut p.client_secret);
    }
    for f in [&mut raw.tls.cert_file, &mut raw.tls.key_file] {
        if f.is_some() {
            *f = Some(NOWHERE["file://".len()..].into());
        }
    }
    check(Config::from_raw(raw));
}

/// The invariants of a validation result.
pub fn check(result: Result<Config, ak_outpost::source::values::ConfigError>) {
    let cfg = match result {
        Ok(cfg) => cfg,
        Err(e) => {
            assert!(!e.problems.is_empty(), "refused without a problem");
            return;
        }
    };
    assert!(cfg.secret.len() >= MIN_SECRET_LEN);
    assert!(matches!(cfg.provider.issuer.scheme(), "http" | "https"));
    assert!(cfg.provider.issuer.host_str().is_some());
    assert!(cfg.provider.scopes.iter().any(|s| s == "openid"));
    assert!(cfg.session_lifetime.as_secs() >= 60);
    assert!(!cfg.apps.is_empty());
    for (i, a) in cfg.apps.iter().enumerate() {
        let u = &a.external_host;
        assert!(matches!(u.scheme(), "http" | "https"), "{u}");
        assert!(u.username().is_empty() && u.password().is_none(), "{u}");
        let host = u.host_str().unwrap_or_else(|| panic!("{u} has no host"));
        for b in &cfg.apps[i + 1..] {
            assert_ne!(a.host_key(), b.host_key());
            assert_ne!(a.name, b.name);
        }
        match a.mode {
            Mode::ForwardDomain => {
                let cd = &a.cookie_domain;
                assert!(cd.contains('.') && !cd.starts_with('.'), "{cd:?}");
                let h = host.trim_end_matches('.');
                assert!(
                    h == cd || h.ends_with(&format!(".{cd}")),
                    "{host} not under {cd}"
                );
            }
            Mode::ForwardSingle => assert!(a.cookie_domain.is_empty()),
            Mode::Proxy => panic!("proxy mode accepted"),
        }
        let redirect = url::Url::parse(&a.redirect_uri)
            .unwrap_or_else(|e| panic!("redirect URI {}: {e}", a.redirect_uri));
        assert_eq!(redirect.host_str(), Some(host), "{}", a.redirect_uri);
    }
}
