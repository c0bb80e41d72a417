//! Logging set-up: JSON lines in containers (or when asked), human-readable text on a
//! terminal. Secrets never reach a log line: the types that hold them redact their `Debug`.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set and valid: a default
/// level and `target=level` pairs, comma-separated (`debug,hyper=info`). Span and field
/// filters are not supported: the regex engine they need would be mapped into memory for
/// nothing (≈ 0.5 MiB of the idle RSS, BENCHMARKS.md).
pub fn init(level: &str, format: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .or_else(|| {
            format!("{level},hyper=warn,reqwest=warn,rustls=warn")
                .parse()
                .ok()
        })
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let json = match format {
        "json" => true,
        "text" => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .finish()
            .with(filter)
            .try_init()
    } else {
        builder.finish().with(filter).try_init()
    };
}
