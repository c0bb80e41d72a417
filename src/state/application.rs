//! Applications as served: a [`Site`] (settings, keys, names) with its provider client and
//! its request metrics, and the [`AppSet`] that finds the application for a request's host
//! in O(number of DNS labels), whatever the number of applications. Built by a configuration
//! source, read by the HTTP layer; never changed once built.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;

use foldhash::fast::RandomState;

use crate::core::app::{Mode, Site, strip_port};
use crate::provider::OidcClient;
use crate::state::metrics::HostMetrics;
use crate::state::upstream::ProxyTo;

/// What serving an application needs, built once per configuration.
pub struct Application {
    pub site: Site,
    pub oidc: Arc<OidcClient>,
    /// Its request histograms (`host` label: the external host).
    pub metrics: &'static HostMetrics,
    /// Proxy mode's way to the application (`Some` exactly in proxy mode).
    pub upstream: Option<ProxyTo>,
}

/// An application is its site plus the network parts: `app.spec`, `app.sealer`, … read the
/// site's fields, and the core's functions that take a `&Site` take `&app`.
impl Deref for Application {
    type Target = Site;

    fn deref(&self) -> &Site {
        &self.site
    }
}

/// Applications indexed by host.
pub struct AppSet {
    apps: Vec<Arc<Application>>,
    // Looked up with every request's host; built from the configuration only, so no client
    // chooses what is stored. foldhash: a few instructions per host, not SipHash's hundreds.
    by_key: HashMap<String, usize, RandomState>,
    by_hostname: HashMap<String, Vec<usize>, RandomState>,
    by_domain: HashMap<String, usize, RandomState>,
}

impl AppSet {
    pub fn new(apps: Vec<Arc<Application>>) -> AppSet {
        let mut by_key = HashMap::default();
        let mut by_hostname: HashMap<String, Vec<usize>, RandomState> = HashMap::default();
        let mut by_domain = HashMap::default();
        for (i, a) in apps.iter().enumerate() {
            by_key.entry(a.spec.host_key()).or_insert(i);
            if let Some(h) = a.spec.external_host.host_str() {
                by_hostname.entry(h.to_string()).or_default().push(i);
            }
            if a.spec.mode == Mode::ForwardDomain && !a.spec.cookie_domain.is_empty() {
                by_domain.entry(a.spec.cookie_domain.clone()).or_insert(i);
            }
        }
        AppSet {
            apps,
            by_key,
            by_hostname,
            by_domain,
        }
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Application>> {
        self.apps.iter()
    }

    /// Finds the application for a `Host` value (`name[:port]`): exact host and port, then
    /// the host name alone when it is unambiguous, then the longest forward_domain cookie
    /// domain on a label boundary, then the only application if there is just one.
    pub fn lookup(&self, host: &str) -> Option<&Arc<Application>> {
        let host = host.trim().trim_end_matches('.');
        // Hosts arrive lowercase almost always: no copy then.
        let host: Cow<'_, str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        if let Some(&i) = self.by_key.get(host.as_ref()) {
            return self.apps.get(i);
        }
        let hostname = strip_port(&host);
        if let Some(v) = self.by_hostname.get(hostname)
            && v.len() == 1
        {
            return self.apps.get(v[0]);
        }
        let mut rest = hostname;
        loop {
            if let Some(&i) = self.by_domain.get(rest) {
                return self.apps.get(i);
            }
            match rest.find('.') {
                Some(dot) => rest = &rest[dot + 1..],
                None => break,
            }
        }
        if self.apps.len() == 1 {
            return self.apps.first();
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::app::{AppExtras, AppSpec};
    use crate::core::seal::Sealer;
    use url::Url;

    /// An application for table tests (provider never contacted).
    pub(crate) fn app(host: &str, mode: Mode, cd: &str) -> Arc<Application> {
        thread_local! {
            static HTTP: reqwest::Client = reqwest::Client::new();
        }
        let settings = crate::provider::ClientSettings {
            issuer: Url::parse("https://idp.example.com").unwrap(),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            client_auth: crate::provider::ClientAuth::Auto,
            cache_ttl: std::time::Duration::from_secs(60),
            max_concurrent_checks: 1,
            extra_issuers: vec![],
            outage_grace: std::time::Duration::ZERO,
            new_token_checks_per_second: 0,
        };
        Arc::new(Application {
            site: Site {
                spec: AppSpec::new(host.into(), host, mode, cd, "", vec![]).unwrap(),
                sealer: Arc::new(Sealer::new(b"0123456789abcdef0123456789abcdef", "t")),
                cookie_name: "c".into(),
                provider_name: String::new(),
                app_slug: String::new(),
                extras: AppExtras::default(),
            },
            oidc: Arc::new(OidcClient::new(settings, HTTP.with(|c| c.clone()))),
            metrics: crate::state::metrics::host_metrics(host),
            upstream: None,
        })
    }

    #[test]
    fn lookup_by_host_port_hostname_and_domain_with_many_apps() {
        let mut apps: Vec<Arc<Application>> = (0..500)
            .map(|i| {
                app(
                    &format!("https://app{i}.example.com"),
                    Mode::ForwardSingle,
                    "",
                )
            })
            .collect();
        apps.push(app(
            "https://auth.corp.example",
            Mode::ForwardDomain,
            "corp.example",
        ));
        apps.push(app(
            "https://auth.dev.corp.example",
            Mode::ForwardDomain,
            "dev.corp.example",
        ));
        apps.push(app(
            "http://ported.example.com:8080",
            Mode::ForwardSingle,
            "",
        ));
        let set = AppSet::new(apps);
        let name = |h: &str| set.lookup(h).map(|a| a.spec.name.clone());
        assert_eq!(
            name("app417.example.com").as_deref(),
            Some("https://app417.example.com")
        );
        assert_eq!(
            name("APP3.example.com:443").as_deref(),
            Some("https://app3.example.com")
        );
        assert_eq!(
            name("ported.example.com:8080").as_deref(),
            Some("http://ported.example.com:8080")
        );
        assert_eq!(
            name("ported.example.com").as_deref(),
            Some("http://ported.example.com:8080")
        );
        assert_eq!(
            name("grafana.corp.example").as_deref(),
            Some("https://auth.corp.example")
        );
        assert_eq!(
            name("x.dev.corp.example").as_deref(),
            Some("https://auth.dev.corp.example"),
            "longest domain wins"
        );
        assert_eq!(name("evilcorp.example"), None, "label boundary");
        assert_eq!(name("unknown.example.org"), None);
        assert_eq!(name(""), None);
    }
}
