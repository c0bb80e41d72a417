//! Shared state: the current [`Runtime`] (applications and settings), swapped atomically on
//! reload, plus the few process-wide caches. Requests take an `Arc` snapshot and never block a
//! reload, nor see half of one. It neither builds configurations nor answers requests.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::core::login::STATE_TTL_SECS;
use crate::core::token::unix_now;
use crate::core::upstream::Upstream;
use crate::provider::OidcClient;
use crate::state::application::AppSet;
use crate::state::client_rate::{ClientRate, ClientRates};
use crate::state::memo::SessionMemo;
use crate::state::ttl_set::TtlSet;
use crate::state::upstream::UpstreamClient;

/// How long an ended provider session is remembered: longer than any session can live.
pub const ENDED_SESSION_MEMORY: Duration = Duration::from_secs(8 * 86400);

/// Settings that apply to every application.
#[derive(Debug, Clone)]
pub struct Settings {
    pub outpost_name: String,
    pub trusted_proxies: Vec<IpNet>,
    pub session_lifetime: Duration,
    pub send_jwt_header: bool,
    pub log_requests: bool,
    /// Requests per client address that is not a trusted proxy.
    pub client_rate: ClientRate,
}

impl Settings {
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

/// One consistent configuration.
pub struct Runtime {
    pub apps: AppSet,
    pub settings: Settings,
    /// False until the first configuration arrived (authentik mode start-up): requests are
    /// answered 503 meanwhile, never judged against an empty configuration.
    pub loaded: bool,
    /// Opened session cookies of this configuration (see [`crate::state::memo`]).
    pub memo: SessionMemo,
    /// Authenticated `Authorization` headers of this configuration.
    pub header_memo: SessionMemo,
}

impl Runtime {
    /// An application's upstream client with exactly these settings, if any.
    pub fn upstream_client(&self, spec: &Upstream) -> Option<Arc<UpstreamClient>> {
        self.apps
            .iter()
            .filter_map(|a| a.upstream.as_ref())
            .find(|u| u.client.spec == *spec)
            .map(|u| Arc::clone(&u.client))
    }
}

/// Everything the request handlers share.
pub struct Outpost {
    runtime: ArcSwap<Runtime>,
    /// Login states already used in this process (replay protection).
    used_states: TtlSet,
    /// Provider sessions (`sid`) ended by the server; their cookies stop working at once.
    ended_sessions: TtlSet,
    /// Where misconfiguration reports go (authentik mode: its event log), if anywhere.
    reports: OnceLock<mpsc::Sender<serde_json::Value>>,
    /// Applications reported recently (at most one report per application per interval).
    reported: TtlSet,
    /// Request buckets of clients that are not trusted proxies.
    client_rates: ClientRates,
}

/// The shortest time between two misconfiguration reports for one application.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(60);

impl Outpost {
    pub fn new(runtime: Runtime) -> Outpost {
        Outpost {
            runtime: ArcSwap::from_pointee(runtime),
            used_states: TtlSet::new(100_000, Duration::from_secs(STATE_TTL_SECS as u64 + 60)),
            ended_sessions: TtlSet::new(1_000_000, ENDED_SESSION_MEMORY),
            reports: OnceLock::new(),
            reported: TtlSet::new(10_000, REPORT_INTERVAL),
            client_rates: ClientRates::default(),
        }
    }

    /// Takes one request from a client's bucket (see [`ClientRates`]); false: over its rate.
    pub fn admit_client(&self, ip: IpAddr, rate: ClientRate) -> bool {
        self.client_rates.admit(ip, rate, std::time::Instant::now())
    }

    /// Sends misconfiguration reports to `tx` from now on (set once).
    pub fn report_to(&self, tx: mpsc::Sender<serde_json::Value>) {
        let _ = self.reports.set(tx);
    }

    /// Reports a misconfiguration of application `app`, unless there is nowhere to report to
    /// or it was reported within [`REPORT_INTERVAL`]; `report` builds the report only then.
    /// Never waits: a full queue drops the report.
    pub fn report(&self, app: &str, report: impl FnOnce() -> serde_json::Value) {
        let Some(tx) = self.reports.get() else {
            return;
        };
        if self.reported.insert(app) {
            let _ = tx.try_send(report());
        }
    }

    /// Records that the provider ended session `sid` (authentik's SESSION_END).
    pub fn end_session(&self, sid: &str) {
        self.ended_sessions.insert(sid);
    }

    /// Whether the provider ended session `sid`.
    pub fn is_ended(&self, sid: &str) -> bool {
        self.ended_sessions.contains(sid)
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces the configuration atomically.
    pub fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Marks a login state used; false if it already was.
    pub fn claim_state(&self, id: &str) -> bool {
        self.used_states.insert(id)
    }

    /// The distinct provider clients of the current configuration.
    pub fn providers(&self) -> Vec<Arc<OidcClient>> {
        let rt = self.runtime();
        let mut out: Vec<Arc<OidcClient>> = Vec::new();
        for app in rt.apps.iter() {
            if !out.iter().any(|c| Arc::ptr_eq(c, &app.oidc)) {
                out.push(Arc::clone(&app.oidc));
            }
        }
        out
    }

    /// Why the outpost is serving in a degraded way (a provider it cannot reach), if it is.
    pub fn degraded(&self) -> Option<String> {
        let now = unix_now();
        let down: Vec<String> = self
            .providers()
            .iter()
            .filter_map(|c| {
                let since = c.down_since()?;
                Some(format!(
                    "identity provider {} unreachable for {}s, sessions it confirmed within the last {}s keep working",
                    c.settings.issuer,
                    now - since,
                    c.settings.outage_grace.as_secs()
                ))
            })
            .collect();
        (!down.is_empty()).then(|| down.join("; "))
    }

    /// Whether every provider is usable.
    pub fn ready(&self) -> Result<(), String> {
        let rt = self.runtime();
        if !rt.loaded {
            return Err("configuration not loaded yet".into());
        }
        for app in rt.apps.iter() {
            if let Some(reason) = app.oidc.not_ready_reason() {
                return Err(format!("{}: {reason}", app.spec.name));
            }
        }
        Ok(())
    }
}
