//! Values both configuration sources read, and how they report problems: `env://NAME` /
//! `file:///path` indirections, durations, CIDRs, the default trusted proxies, and
//! [`ConfigError`], which lists every problem of a configuration at once. Read once at
//! start-up, never per request.

use std::time::Duration;

use ipnet::IpNet;

/// Proxies trusted by default: loopback and the private ranges container networks use.
pub const DEFAULT_TRUSTED_PROXIES: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// How long a session the provider confirmed keeps working while the provider cannot be
/// reached, unless configured otherwise.
pub const DEFAULT_OUTAGE_GRACE: Duration = Duration::from_secs(15 * 60);

/// Checks per second of `Authorization` values the provider never confirmed, unless
/// configured otherwise.
pub const DEFAULT_NEW_TOKEN_CHECKS_PER_SECOND: u32 = 200;

/// Longest configurable outage grace.
pub const MAX_OUTAGE_GRACE: Duration = Duration::from_secs(7 * 86400);

/// Exit code for a bad configuration (EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// Every problem found in a configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// Resolves `env://` and `file://` indirections.
pub fn resolve_indirection(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("env://") {
        return std::env::var(name).map_err(|_| format!("environment variable {name} is not set"));
    }
    if let Some(path) = value.strip_prefix("file://") {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read {path}: {e}"));
    }
    Ok(value.to_string())
}

/// Parses `90`, `90s`, `5m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (use e.g. 60, 90s, 5m, 12h, 7d)"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("'{text}' has an unknown unit (use s, m, h or d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses `10.0.0.0/8` or a single address.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .ok()
        .or_else(|| t.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// An outage grace (`0` turns it off): a duration up to [`MAX_OUTAGE_GRACE`], the default
/// when unset; problems are reported under `name`.
pub fn parse_outage_grace(
    raw: Option<Result<Duration, String>>,
    name: &str,
    p: &mut Vec<String>,
) -> Duration {
    match raw {
        None => DEFAULT_OUTAGE_GRACE,
        Some(Ok(d)) if d <= MAX_OUTAGE_GRACE => d,
        Some(Ok(_)) => {
            p.push(format!(
                "{name}: must be at most 7d (0 turns the grace off)"
            ));
            DEFAULT_OUTAGE_GRACE
        }
        Some(Err(e)) => {
            p.push(format!("{name}: {e}"));
            DEFAULT_OUTAGE_GRACE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_pass_through() {
        assert_eq!(resolve_indirection("abc").unwrap(), "abc");
    }

    #[test]
    fn file_values_are_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "from-file\n").unwrap();
        assert_eq!(
            resolve_indirection(&format!("file://{}", p.display())).unwrap(),
            "from-file"
        );
        assert!(resolve_indirection("file:///nonexistent/x").is_err());
    }

    #[test]
    fn env_values_are_read() {
        // PATH is always set in a test process; we never set variables (not thread-safe).
        assert!(!resolve_indirection("env://PATH").unwrap().is_empty());
        assert!(resolve_indirection("env://AK_OUTPOST_SURELY_UNSET_VAR").is_err());
    }
}
