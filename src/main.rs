//! The `ak-outpost` binary: parse arguments, load configuration, bind, serve until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use ak_outpost::config::{Config, EXIT_CONFIG};
use ak_outpost::outpost::{Outpost, Runtime};
use ak_outpost::server::{self, Listener};
use ak_outpost::{healthcheck, telemetry};
use tokio::net::TcpListener;
use tokio::sync::watch;

const USAGE: &str = "usage:
  ak-outpost --config <file.yaml>          run standalone from a YAML file
  ak-outpost --check-config --config <f>   validate the file and exit (64 if invalid)
  ak-outpost healthcheck [--config <f>]    probe the running outpost's ping endpoint
  ak-outpost --version";

enum Command {
    Run(PathBuf),
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
        (None, _) => Err("no configuration: pass --config <file.yaml>".into()),
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
            let addr = path
                .and_then(|p| Config::load(&p).ok())
                .map(|c| c.listen_metrics.unwrap_or(c.listen_http))
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
    }
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(path, cfg))
}

async fn serve(path: PathBuf, cfg: Config) -> ExitCode {
    let http = match TcpListener::bind(cfg.listen_http).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %cfg.listen_http, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match cfg.listen_metrics {
        Some(a) => match TcpListener::bind(a).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(addr = %a, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let outpost = Arc::new(Outpost::new(Runtime::from_config(&cfg, None)));
    tracing::info!(
        http = %http.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics = %metrics.as_ref().and_then(|m| m.local_addr().ok()).map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        applications = cfg.apps.len(),
        version = env!("CARGO_PKG_VERSION"),
        "ak-outpost listening"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await; // a closed channel also means stop
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(server::serve(
        http,
        Listener::Http,
        Arc::clone(&outpost),
        stopped(stop_rx.clone()),
    )));
    if let Some(m) = metrics {
        tasks.push(tokio::spawn(server::serve(
            m,
            Listener::Metrics,
            Arc::clone(&outpost),
            stopped(stop_rx.clone()),
        )));
    }
    signals(&path, &outpost).await;
    tracing::info!("shutting down: draining connections");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    ExitCode::SUCCESS
}

/// Waits for SIGTERM/SIGINT; SIGHUP re-reads the configuration meanwhile.
async fn signals(path: &std::path::Path, outpost: &Outpost) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => match Config::load(path) {
                Ok(cfg) => {
                    let old = outpost.runtime();
                    outpost.swap(Runtime::from_config(&cfg, Some(&old)));
                    tracing::info!(applications = cfg.apps.len(), "configuration reloaded");
                }
                Err(e) => tracing::error!(error = %e, "new configuration rejected; the old one keeps serving"),
            },
        }
    }
}
