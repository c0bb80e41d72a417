//! The `ak-outpost` binary: parse arguments, load configuration, bind, serve until a signal.
//! Wiring only: every rule lives in the library. The library has no `unsafe`; the one call
//! here that needs it ([`startup_pages::release`]) is a madvise of the binary's own pages.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ak_outpost::http::server::{self, Listener};
use ak_outpost::source::authentik::{self, AuthentikEnv};
use ak_outpost::source::values::EXIT_CONFIG;
use ak_outpost::source::yaml::Config;
use ak_outpost::state::certs as tls;
use ak_outpost::state::outpost::{Outpost, Runtime};
use ak_outpost::{healthcheck, telemetry};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[allow(unsafe_code)]
mod startup_pages;

const USAGE: &str = "usage:
  ak-outpost                               run as authentik's proxy outpost (AUTHENTIK_HOST, AUTHENTIK_TOKEN)
  ak-outpost --config <file.yaml>          run standalone from a YAML file
  ak-outpost --check-config --config <f>   validate the file and exit (64 if invalid)
  ak-outpost healthcheck [--config <f>]    probe the running outpost's ping endpoint
  ak-outpost --version";

enum Command {
    Run(PathBuf),
    Authentik,
    Check(PathBuf),
    Health(Option<PathBuf>),
    Version,
}

fn parse_args() -> Result<Command, String> {
    let mut args = std::env::args().skip(1);
    let mut config = std::env::var_os("AK_OUTPOST_CONFIG").map(PathBuf::from);
    let mut check = false;
    let mut health = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                config = Some(args.next().ok_or("--config needs a file")?.into());
            }
            s if s.starts_with("--config=") => config = Some(s["--config=".len()..].into()),
            "--check-config" => check = true,
            "healthcheck" => health = true,
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if health {
        return Ok(Command::Health(config));
    }
    match (config, check) {
        (Some(c), true) => Ok(Command::Check(c)),
        (Some(c), false) => Ok(Command::Run(c)),
        (None, false) if std::env::var_os("AUTHENTIK_HOST").is_some() || std::env::var_os("AUTHENTIK_TOKEN").is_some() => {
            Ok(Command::Authentik)
        }
        (None, _) => Err(
            "no configuration: pass --config <file.yaml>, or set AUTHENTIK_HOST and AUTHENTIK_TOKEN".into(),
        ),
    }
}

fn main() -> ExitCode {
    let cmd = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("ak-outpost: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    match cmd {
        Command::Version => {
            println!("ak-outpost {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check(path) => match Config::load(&path) {
            Ok(_) => {
                println!("{}: configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        Command::Health(path) => {
            let addr = match path {
                Some(p) => Config::load(&p)
                    .ok()
                    .map(|c| c.listen_metrics.unwrap_or(c.listen_http)),
                None => Some(
                    AuthentikEnv::from_lookup(|k| match k {
                        "AUTHENTIK_HOST" => Some("http://unused/".into()),
                        "AUTHENTIK_TOKEN" => Some("unused".into()),
                        _ => std::env::var(k).ok(),
                    })
                    .map(|e| e.listen_metrics)
                    .unwrap_or_else(|_| ([127, 0, 0, 1], 9300).into()),
                ),
            }
            .unwrap_or_else(|| ([127, 0, 0, 1], 9300).into());
            match healthcheck::probe(addr) {
                Ok(status) if status < 400 => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("healthcheck: status {status}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("healthcheck: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(path) => run(path),
        Command::Authentik => run_authentik(),
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

fn run_authentik() -> ExitCode {
    let env = match AuthentikEnv::from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ak-outpost: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    telemetry::init(&env.log_level, "auto");
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let Some(http) = bind(env.listen_http).await else {
            return ExitCode::FAILURE;
        };
        let metrics = bind(env.listen_metrics).await;
        let certs = match tls::self_signed() {
            Ok(c) => Some(Arc::new(tls::CertStore::new(c))),
            Err(e) => {
                tracing::error!(error = %e, "no TLS listener");
                None
            }
        };
        let https = match (&certs, bind(env.listen_https).await) {
            (Some(store), Some(l)) => tls_acceptor(Arc::clone(store)).map(|a| (l, a)),
            _ => None,
        };
        let outpost = Arc::new(Outpost::new(env.empty_runtime()));
        tracing::info!(
            authentik = %env.host,
            http = %env.listen_http,
            metrics = %env.listen_metrics,
            version = env!("CARGO_PKG_VERSION"),
            "ak-outpost starting in authentik mode"
        );
        let refresh = Arc::new(tokio::sync::Notify::new());
        let control = tokio::spawn(authentik::control(
            env.clone(),
            Arc::clone(&outpost),
            Arc::clone(&refresh),
            certs,
        ));
        run_listeners(
            http,
            https,
            metrics,
            &outpost,
            Reload::Authentik(refresh),
            Some(control),
        )
        .await
    })
}

fn run(path: PathBuf) -> ExitCode {
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    telemetry::init(&cfg.log.level, &cfg.log.format);
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async move {
        let Some(http) = bind(cfg.listen_http).await else {
            return ExitCode::FAILURE;
        };
        let metrics = match cfg.listen_metrics {
            Some(a) => match bind(a).await {
                Some(l) => Some(l),
                None => return ExitCode::FAILURE,
            },
            None => None,
        };
        let https = match cfg.listen_https {
            None => None,
            Some(a) => {
                let cert = match &cfg.tls_pem {
                    Some((c, k)) => tls::from_pem(c, k),
                    None => {
                        tracing::warn!(
                            "no tls.cert_file configured: serving a self-signed certificate on {a}"
                        );
                        tls::self_signed()
                    }
                };
                let (Some(l), Ok(cert)) = (bind(a).await, cert) else {
                    tracing::error!(addr = %a, "cannot start the TLS listener");
                    return ExitCode::FAILURE;
                };
                match tls_acceptor(Arc::new(tls::CertStore::new(cert))) {
                    Some(acc) => Some((l, acc)),
                    None => return ExitCode::FAILURE,
                }
            }
        };
        let outpost = match Runtime::from_config(&cfg, None) {
            Ok(rt) => Arc::new(Outpost::new(rt)),
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            http = %cfg.listen_http,
            https = %cfg.listen_https.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            metrics = %cfg.listen_metrics.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
            applications = cfg.apps.len(),
            version = env!("CARGO_PKG_VERSION"),
            "ak-outpost listening"
        );
        run_listeners(http, https, metrics, &outpost, Reload::File(path), None).await
    })
}

fn tls_acceptor(store: Arc<tls::CertStore>) -> Option<tokio_rustls::TlsAcceptor> {
    match tls::server_config(store) {
        Ok(cfg) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        Err(e) => {
            tracing::error!(error = %e, "TLS configuration failed");
            None
        }
    }
}

async fn bind(addr: std::net::SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(addr = %addr, error = %e, "cannot listen");
            None
        }
    }
}

/// What SIGHUP / SIGUSR1 reload.
enum Reload {
    File(PathBuf),
    Authentik(Arc<tokio::sync::Notify>),
}

/// Serves until SIGTERM/SIGINT (or a fatal control error), then drains.
async fn run_listeners(
    http: TcpListener,
    https: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    metrics: Option<TcpListener>,
    outpost: &Arc<Outpost>,
    reload: Reload,
    control: Option<tokio::task::JoinHandle<authentik::Fatal>>,
) -> ExitCode {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(release_when_ready(Arc::clone(outpost)));
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await; // a closed channel also means stop
    };
    let mut tasks = vec![tokio::spawn(server::serve(
        http,
        Listener::Http,
        None,
        Arc::clone(outpost),
        stopped(stop_rx.clone()),
    ))];
    if let Some((l, acceptor)) = https {
        tasks.push(tokio::spawn(server::serve(
            l,
            Listener::Http,
            Some(acceptor),
            Arc::clone(outpost),
            stopped(stop_rx.clone()),
        )));
    }
    if let Some(m) = metrics {
        tasks.push(tokio::spawn(server::serve(
            m,
            Listener::Metrics,
            None,
            Arc::clone(outpost),
            stopped(stop_rx.clone()),
        )));
    }
    let code = tokio::select! {
        _ = signals(&reload, outpost) => ExitCode::SUCCESS,
        fatal = async {
            match control {
                Some(c) => c.await.ok(),
                None => std::future::pending().await,
            }
        } => {
            tracing::error!(reason = ?fatal, "stopping");
            ExitCode::FAILURE
        }
    };
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    code
}

/// Once the outpost is ready (configuration read or fetched, providers discovered; at the latest
/// after two minutes), hands the code and tables that only start-up used back to the kernel.
async fn release_when_ready(outpost: Arc<Outpost>) {
    for _ in 0..1200 {
        if outpost.ready().is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let kib = startup_pages::release() / 1024;
    tracing::debug!(kib, "start-up pages of the binary released");
}

/// Waits for SIGTERM/SIGINT; SIGHUP re-reads the YAML file, SIGUSR1 refreshes from authentik.
async fn signals(reload: &Reload, outpost: &Outpost) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        let reload_now = tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => true,
            _ = usr1.recv() => true,
        };
        if !reload_now {
            continue;
        }
        match reload {
            Reload::File(path) => match Config::load(path) {
                Ok(cfg) => match Runtime::from_config(&cfg, Some(&outpost.runtime())) {
                    Ok(rt) => {
                        outpost.swap(rt);
                        tracing::info!(applications = cfg.apps.len(), "configuration reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "new configuration not applied; the old one keeps serving")
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "new configuration rejected; the old one keeps serving")
                }
            },
            Reload::Authentik(n) => n.notify_one(),
        }
    }
}
