//! Prometheus metrics, with authentik's metric names and labels: a request duration histogram
//! by `outpost_name`, `method`, `host` and `type`, response classes and connection gauges, and
//! their text rendering (the metrics listener itself is `http::metrics`). Counters are plain
//! atomics: no lock and no allocation on the request path.
//!
//! Label values are bounded whatever clients send: `host` is the external host of the
//! application that answered (empty when none did), not the request's `Host`, and `method`
//! is one of the common methods or `OTHER`. Each configured host's histograms are made when
//! the configuration is loaded and kept across reloads (so counters never reset on a swap).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::core::paths::PING_PATH;

/// Prometheus client default buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Histogram {
    buckets: [AtomicU64; 11],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 11],
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Counts into the first bucket that holds `d` (one atomic add); `render` accumulates.
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The `method` label values; requests with any other method count as `OTHER`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The request histograms of one `host` label value, one per method.
pub struct HostMetrics {
    host: String,
    by_method: [Histogram; METHODS.len()],
}

impl HostMetrics {
    const fn new(host: String) -> HostMetrics {
        HostMetrics {
            host,
            by_method: [const { Histogram::new() }; METHODS.len()],
        }
    }
}

// Process-wide by nature: one set of counters per process, like a Prometheus registry.
/// Hosts of configured applications, in the order first seen; only configuration loads add,
/// and an entry lives as long as the process (so a request finds its histograms without
/// reference counting).
static HOSTS: Mutex<Vec<&'static HostMetrics>> = Mutex::new(Vec::new());
/// Proxy mode's upstream histograms, made like [`HOSTS`] at configuration loads.
static UPSTREAMS: Mutex<Vec<&'static UpstreamMetrics>> = Mutex::new(Vec::new());
/// Requests no application answered (unknown host, the outpost's own endpoints).
static NO_APP: HostMetrics = HostMetrics::new(String::new());
static PING: HostMetrics = HostMetrics::new(String::new());
static STATUS_2XX: AtomicU64 = AtomicU64::new(0);
static STATUS_4XX: AtomicU64 = AtomicU64::new(0);
static STATUS_5XX: AtomicU64 = AtomicU64::new(0);

static LAST_UPDATE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

static CONNECTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Records whether the websocket to authentik is up.
pub fn set_connected(up: bool) {
    CONNECTED.store(up, Ordering::Relaxed);
}

/// Records a successful configuration refresh (authentik mode).
pub fn set_last_update() {
    LAST_UPDATE.store(crate::core::token::unix_now(), Ordering::Relaxed);
}

/// Records one request.
pub fn observe(
    path: &str,
    method: &Method,
    app: Option<&HostMetrics>,
    status: StatusCode,
    d: Duration,
) {
    let group = if path.starts_with(PING_PATH) {
        &PING
    } else {
        app.unwrap_or(&NO_APP)
    };
    group.by_method[method_index(method)].observe(d);
    match status.as_u16() {
        200..=399 => STATUS_2XX.fetch_add(1, Ordering::Relaxed),
        400..=499 => STATUS_4XX.fetch_add(1, Ordering::Relaxed),
        _ => STATUS_5XX.fetch_add(1, Ordering::Relaxed),
    };
}

/// The histograms of the application whose external host is `host` (`name[:port]`), made
/// on first use and shared by every later configuration with that host.
pub fn host_metrics(host: &str) -> &'static HostMetrics {
    let mut hosts = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = hosts.iter().find(|h| h.host == host) {
        return h;
    }
    // Bounded by the distinct hosts ever configured; kept, like every Prometheus series.
    let h: &'static HostMetrics = Box::leak(Box::new(HostMetrics::new(host.to_string())));
    hosts.push(h);
    h
}

/// Proxy mode: how long an application's upstream took to answer (until its response head),
/// by method; labels as authentik's `authentik_outpost_proxy_upstream_response_duration_seconds`.
pub struct UpstreamMetrics {
    host: String,
    scheme: String,
    upstream_host: String,
    by_method: [Histogram; METHODS.len()],
}

impl UpstreamMetrics {
    /// Records one upstream answer.
    pub fn observe(&self, method: &Method, d: Duration) {
        self.by_method[method_index(method)].observe(d);
    }
}

/// The upstream histograms of the application at external host `host` (`name[:port]`) with
/// its upstream at `scheme://upstream_host`, made on first use and kept.
pub fn upstream_metrics(host: &str, scheme: &str, upstream_host: &str) -> &'static UpstreamMetrics {
    let mut all = UPSTREAMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(u) = all
        .iter()
        .find(|u| u.host == host && u.scheme == scheme && u.upstream_host == upstream_host)
    {
        return u;
    }
    let u: &'static UpstreamMetrics = Box::leak(Box::new(UpstreamMetrics {
        host: host.to_string(),
        scheme: scheme.to_string(),
        upstream_host: upstream_host.to_string(),
        by_method: [const { Histogram::new() }; METHODS.len()],
    }));
    all.push(u);
    u
}

/// What the caller reads from the state for [`render`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Health {
    /// Every provider is usable (discovered).
    pub ready: bool,
    /// No provider is down (none has its circuit breaker open).
    pub providers_up: bool,
    /// Token checks cached, over all providers.
    pub cached_checks: u64,
    /// Token checks answered from the outage grace so far, over all providers.
    pub grace_served: u64,
}

/// The Prometheus text: every counter, plus the outpost's name and its [`Health`].
pub fn render(outpost_name: &str, health: &Health) -> String {
    let name = escape_label(outpost_name);
    let mut out = String::with_capacity(4096);
    render_durations(&mut out, &name);
    render_upstreams(&mut out, &name);
    out.push_str("# HELP ak_outpost_responses_total Responses by status class\n");
    out.push_str("# TYPE ak_outpost_responses_total counter\n");
    for (class, c) in [
        ("2xx", &STATUS_2XX),
        ("4xx", &STATUS_4XX),
        ("5xx", &STATUS_5XX),
    ] {
        out.push_str(&format!(
            "ak_outpost_responses_total{{outpost_name=\"{name}\",class=\"{class}\"}} {}\n",
            c.load(Ordering::Relaxed)
        ));
    }
    out.push_str(
        "# HELP authentik_outpost_info Outpost info\n# TYPE authentik_outpost_info gauge\n",
    );
    out.push_str(&format!(
        "authentik_outpost_info{{outpost_name=\"{name}\",outpost_type=\"proxy\",version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    let last = LAST_UPDATE.load(Ordering::Relaxed);
    if last > 0 {
        out.push_str("# HELP authentik_outpost_connection Websocket connection to authentik\n");
        out.push_str("# TYPE authentik_outpost_connection gauge\n");
        out.push_str(&format!(
            "authentik_outpost_connection{{outpost_name=\"{name}\",outpost_type=\"proxy\"}} {}\n",
            u8::from(CONNECTED.load(Ordering::Relaxed))
        ));
        out.push_str("# HELP authentik_outpost_last_update Last configuration refresh\n");
        out.push_str("# TYPE authentik_outpost_last_update gauge\n");
        out.push_str(&format!(
            "authentik_outpost_last_update{{outpost_name=\"{name}\",outpost_type=\"proxy\",version=\"{}\"}} {last}\n",
            env!("CARGO_PKG_VERSION")
        ));
    }
    out.push_str("# HELP ak_outpost_provider_ready Whether every identity provider is usable\n");
    out.push_str("# TYPE ak_outpost_provider_ready gauge\n");
    out.push_str(&format!(
        "ak_outpost_provider_ready{{outpost_name=\"{name}\"}} {}\n",
        u8::from(health.ready)
    ));
    out.push_str("# HELP ak_outpost_provider_up Whether every identity provider answers (0 during an outage)\n");
    out.push_str("# TYPE ak_outpost_provider_up gauge\n");
    out.push_str(&format!(
        "ak_outpost_provider_up{{outpost_name=\"{name}\"}} {}\n",
        u8::from(health.providers_up)
    ));
    out.push_str(
        "# HELP ak_outpost_outage_grace_checks_total Token checks answered from the outage grace\n",
    );
    out.push_str("# TYPE ak_outpost_outage_grace_checks_total counter\n");
    out.push_str(&format!(
        "ak_outpost_outage_grace_checks_total{{outpost_name=\"{name}\"}} {}\n",
        health.grace_served
    ));
    out.push_str("# HELP ak_outpost_token_cache_entries Cached token checks\n");
    out.push_str("# TYPE ak_outpost_token_cache_entries gauge\n");
    out.push_str(&format!(
        "ak_outpost_token_cache_entries{{outpost_name=\"{name}\"}} {}\n",
        health.cached_checks
    ));
    out
}

/// The request duration histograms of every host and method that saw a request.
fn render_durations(out: &mut String, name: &str) {
    out.push_str(&format!(
        "# HELP {REQUEST_DURATION} Proxy request duration\n# TYPE {REQUEST_DURATION} histogram\n"
    ));
    let hosts: Vec<&'static HostMetrics> = HOSTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let groups = hosts
        .iter()
        .map(|h| ("app", *h))
        .chain([("app", &NO_APP), ("ping", &PING)]);
    for (ty, group) in groups {
        let host = escape_label(&group.host);
        for (method, h) in METHODS.iter().zip(&group.by_method) {
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue; // a series appears with its first request
            }
            let labels = format!(
                "outpost_name=\"{name}\",method=\"{method}\",host=\"{host}\",type=\"{ty}\""
            );
            render_histogram(out, REQUEST_DURATION, &labels, h, count);
        }
    }
}

const REQUEST_DURATION: &str = "authentik_outpost_proxy_request_duration_seconds";
const UPSTREAM_DURATION: &str = "authentik_outpost_proxy_upstream_response_duration_seconds";

/// Proxy mode's upstream histograms (only once an upstream answered).
fn render_upstreams(out: &mut String, name: &str) {
    let all: Vec<&'static UpstreamMetrics> =
        UPSTREAMS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut header = false;
    for u in all {
        for (method, h) in METHODS.iter().zip(&u.by_method) {
            let count = h.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            if !header {
                out.push_str(&format!(
                    "# HELP {UPSTREAM_DURATION} Proxy upstream response duration\n# TYPE {UPSTREAM_DURATION} histogram\n"
                ));
                header = true;
            }
            let labels = format!(
                "outpost_name=\"{name}\",method=\"{method}\",scheme=\"{}\",host=\"{}\",upstream_host=\"{}\"",
                escape_label(&u.scheme),
                escape_label(&u.host),
                escape_label(&u.upstream_host)
            );
            render_histogram(out, UPSTREAM_DURATION, &labels, h, count);
        }
    }
}

fn render_histogram(out: &mut String, metric: &str, labels: &str, h: &Histogram, count: u64) {
    let mut cumulative = 0;
    for (i, b) in BUCKETS.iter().enumerate() {
        cumulative += h.buckets[i].load(Ordering::Relaxed);
        out.push_str(&format!(
            "{metric}_bucket{{{labels},le=\"{b}\"}} {cumulative}\n"
        ));
    }
    out.push_str(&format!(
        "{metric}_bucket{{{labels},le=\"+Inf\"}} {count}\n"
    ));
    out.push_str(&format!(
        "{metric}_sum{{{labels}}} {}\n",
        h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    ));
    out.push_str(&format!("{metric}_count{{{labels}}} {count}\n"));
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_when_rendered() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let per_bucket: Vec<u64> = h
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(per_bucket[0], 1, "1 ms lands in le=0.005");
        assert_eq!(per_bucket[2], 1, "20 ms lands in le=0.025");
        assert_eq!(per_bucket.iter().sum::<u64>(), 2, "60 s is only in +Inf");
        assert_eq!(h.count.load(Ordering::Relaxed), 3);
    }
}
