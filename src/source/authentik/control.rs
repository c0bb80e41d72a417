//! The refresh loop: finds this outpost in authentik, starts the websocket and the event
//! reporter, loads the configuration and keeps it live (periodic refresh with jitter, or on
//! the websocket's trigger), swapping each new runtime in. It orchestrates the sibling files
//! and does not build applications or parse the environment itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::api::{Api, OutpostObject};
use super::apps::build_runtime;
use super::env::AuthentikEnv;
use super::keypairs::{KeypairCache, update_certificates};
use super::ws;
use crate::provider::OidcClient;
use crate::provider::client_tls::TlsSetupError;
use crate::state::certs::CertStore;
use crate::state::outpost::Outpost;

/// Retry interval while authentik cannot be reached at start.
pub const START_RETRY: Duration = Duration::from_secs(3);

/// A random UUIDv4 for this process (the websocket's `instance_uuid`).
pub fn instance_uuid() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Why the controller stopped.
#[derive(Debug)]
pub enum Fatal {
    /// The token sees no outpost (authentik's outpost exits in this case too).
    NoOutpost,
    /// Outbound TLS cannot be set up, so authentik cannot be reached safely.
    Tls(TlsSetupError),
}

/// Loads the configuration, keeps it live, and never returns unless it must stop.
pub async fn control(
    env: AuthentikEnv,
    outpost: Arc<Outpost>,
    refresh: Arc<Notify>,
    certs: Option<Arc<CertStore>>,
) -> Fatal {
    let clients = Api::new(env.host.clone(), env.token.clone(), env.insecure)
        .and_then(|api| Ok((api, OidcClient::http_client(env.insecure)?)));
    let (api, http) = match clients {
        Ok(c) => c,
        Err(e) => return Fatal::Tls(e),
    };
    let obj = match find_outpost(&api).await {
        Ok(o) => o,
        Err(fatal) => return fatal,
    };
    if let Err(e) = api.root_config().await {
        tracing::warn!(error = %e, "root config not readable");
    }
    tracing::info!(outpost = %obj.name, "outpost found");
    let instance = instance_uuid();
    tokio::spawn(ws::run(
        env.host.clone(),
        env.token.clone(),
        obj.pk.clone(),
        instance,
        env.insecure,
        Arc::clone(&outpost),
        Arc::clone(&refresh),
    ));
    spawn_reporter(&api, &outpost);
    let mut loader = Loader {
        http,
        api,
        current: obj,
        certs,
        keypairs: KeypairCache::default(),
    };
    // First load: retry until it works; answer 503 meanwhile.
    while let Err(e) = loader.refresh(&env, &outpost).await {
        tracing::warn!(error = %e, "cannot load providers yet; retrying");
        tokio::time::sleep(START_RETRY).await;
    }
    let offset = jitter(env.reload_jitter);
    loop {
        let interval = refresh_interval(&loader.current);
        tokio::select! {
            _ = tokio::time::sleep(interval + offset) => {}
            _ = refresh.notified() => {
                tokio::time::sleep(offset).await;
            }
        }
        if let Err(e) = loader.refresh(&env, &outpost).await {
            tracing::warn!(error = %e, "refresh failed; the previous configuration keeps serving");
        }
    }
}

/// Asks authentik for this token's outpost until it answers; retries while authentik is
/// unreachable, and gives up only when the token sees no outpost.
async fn find_outpost(api: &Api) -> Result<OutpostObject, Fatal> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match api.outpost().await {
            Ok(Some(o)) => return Ok(o),
            Ok(None) => {
                tracing::error!(
                    "No outposts found with given token, ensure the given token corresponds to an authentik Outpost"
                );
                return Err(Fatal::NoOutpost);
            }
            Err(e) => {
                if attempt <= 3 || attempt.is_multiple_of(20) {
                    tracing::warn!(error = %e, "cannot reach authentik yet; retrying every 3 s");
                }
                tokio::time::sleep(START_RETRY).await;
            }
        }
    }
}

/// Misconfiguration reports go to authentik's event log, from a task of their own.
fn spawn_reporter(api: &Api, outpost: &Outpost) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<serde_json::Value>(16);
    outpost.report_to(tx);
    let reporter = api.clone();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            reporter.configuration_error(event).await;
        }
    });
}

/// The outpost's refresh interval: 300 s when unset or not positive, at least 30 s.
fn refresh_interval(obj: &OutpostObject) -> Duration {
    let secs = match obj.refresh_interval_s.unwrap_or(300) {
        s if s <= 0 => 300,
        s if s < 30 => 30,
        s => s,
    } as u64;
    Duration::from_secs(secs)
}

/// What a refresh needs between runs: the API, one HTTP client for every provider, the latest
/// outpost object, and the downloaded certificates.
struct Loader {
    http: reqwest::Client,
    api: Api,
    current: OutpostObject,
    certs: Option<Arc<CertStore>>,
    keypairs: KeypairCache,
}

impl Loader {
    /// Reads the outpost and its providers, builds a new configuration and swaps it in.
    async fn refresh(
        &mut self,
        env: &AuthentikEnv,
        outpost: &Outpost,
    ) -> Result<(), crate::provider::OidcError> {
        if let Some(o) = self.api.outpost().await? {
            self.current = o;
        }
        let providers = self.api.providers().await?;
        if let Some(store) = &self.certs {
            update_certificates(&self.api, store, &mut self.keypairs, &providers).await;
        }
        let previous = outpost.runtime();
        let rt = build_runtime(env, &self.http, &self.current, &providers, Some(&previous)).await;
        let n = rt.apps.len();
        outpost.swap(rt);
        crate::state::metrics::set_last_update();
        tracing::info!(providers = n, "configuration loaded from authentik");
        Ok(())
    }
}

fn jitter(max: Duration) -> Duration {
    use rand::Rng;
    let secs = max.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs(rand::thread_rng().gen_range(0..=secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_uuids_are_v4() {
        let u = instance_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, instance_uuid());
    }
}
