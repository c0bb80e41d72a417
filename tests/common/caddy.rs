//! Runs a real Caddy with the shipped `nginx-examples/caddy/Caddyfile`,
//! rewritten for the test environment (loopback addresses, plain HTTP, a
//! random port, no admin endpoint), so the tests exercise exactly what users
//! copy.
//!
//! Every placeholder substitution is asserted: if the example changes so that
//! a placeholder is no longer found, `Caddy::start` panics instead of silently
//! testing something else. The rendered file is checked with `caddy validate`
//! before Caddy starts.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The shipped example, relative to `nginx-examples/`.
pub const EXAMPLE: &str = "caddy/Caddyfile";

/// Values substituted for the placeholders of the example.
#[derive(Clone, Debug)]
pub struct CaddyVars {
    /// Replaces `outpost:9000`.
    pub outpost: SocketAddr,
    /// Replaces `app-backend:8080`.
    pub app_upstream: SocketAddr,
    /// Replaces the site address `app.example.com` (e.g. `"app.example.test"`);
    /// the site becomes `http://<app_host>:<port>`, bound to 127.0.0.1.
    pub app_host: String,
}

/// A running `caddy run` listening on `127.0.0.1:port`, with its config,
/// data, logs and `HOME` in a private temp directory. Dropping it stops Caddy
/// (SIGTERM, then SIGKILL after 5 s), waits for it and removes the directory.
pub struct Caddy {
    /// The port the site listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The Caddy binary: `$CADDY_BIN` if set, else `/usr/bin/caddy`, else `caddy`
/// from `PATH`. Panics if none exists.
pub fn caddy_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CADDY_BIN") {
        return PathBuf::from(bin);
    }
    let usr = PathBuf::from("/usr/bin/caddy");
    if usr.is_file() {
        return usr;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("caddy");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("caddy not found (tried $CADDY_BIN, /usr/bin/caddy, PATH); run scripts/install-deps.sh");
}

/// Path of a file under `nginx-examples/`.
pub fn example_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("nginx-examples")
        .join(name)
}

/// A `caddy` command whose `HOME` and XDG directories point into `home`, so
/// Caddy never touches the real user's data or autosave files.
fn caddy_command(home: &Path) -> Command {
    let mut cmd = Command::new(caddy_binary());
    cmd.env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null());
    cmd
}

/// `caddy validate --adapter caddyfile --config <file>`; `Err` holds Caddy's
/// output. Uses a throwaway temp dir as `HOME`.
pub fn validate(file: &Path) -> Result<(), String> {
    let home = tempfile::tempdir().expect("tempdir");
    let out = caddy_command(home.path())
        .arg("validate")
        .arg("--adapter")
        .arg("caddyfile")
        .arg("--config")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running caddy validate: {e}"));
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

/// `caddy fmt --diff <file>`: the lines Caddy would reformat (`-`/`+`
/// prefixed), empty if the file is formatted the way Caddy wants.
pub fn fmt_diff(file: &Path) -> Vec<String> {
    let home = tempfile::tempdir().expect("tempdir");
    let out = caddy_command(home.path())
        .arg("fmt")
        .arg("--diff")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running caddy fmt: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('-') || l.starts_with('+'))
        .map(str::to_string)
        .collect()
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Caddy {
    /// Renders the example with `vars`, checks it with `caddy validate`
    /// (panics with Caddy's output on failure), starts Caddy on a free port
    /// and waits up to 10 s until it serves. Blocking; fine to call from async
    /// tests.
    pub fn start(vars: &CaddyVars) -> Caddy {
        let mut last_error = String::new();
        // Retry in case another process grabs the port between our probe and
        // Caddy's bind().
        for _ in 0..5 {
            let port = super::free_port();
            match Caddy::try_start(vars, port) {
                Ok(caddy) => return caddy,
                Err(e) if e.contains("address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("caddy could not bind a port after 5 attempts:\n{last_error}");
    }

    /// `http://{host}:{port}`. The host does not resolve; point it at
    /// 127.0.0.1 in the client (e.g. `reqwest::ClientBuilder::resolve`).
    pub fn base_url(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    /// Caddy's log (its stderr), for diagnostics.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("caddy.log")).unwrap_or_default()
    }

    /// The rendered Caddyfile Caddy runs.
    pub fn rendered(&self) -> String {
        fs::read_to_string(self.dir.path().join("Caddyfile")).unwrap_or_default()
    }

    fn try_start(vars: &CaddyVars, port: u16) -> Result<Caddy, String> {
        let dir = tempfile::Builder::new()
            .prefix("ak-outpost-caddy-")
            .tempdir()
            .expect("create caddy temp dir");
        let conf = dir.path().join("Caddyfile");
        fs::write(&conf, render(vars, port)).expect("write Caddyfile");
        if let Err(e) = validate(&conf) {
            panic!(
                "caddy validate failed for the rendered {EXAMPLE}:\n{e}\n--- rendered ---\n{}",
                fs::read_to_string(&conf).unwrap_or_default()
            );
        }
        let log = fs::File::create(dir.path().join("caddy.log")).expect("create caddy.log");
        let child = caddy_command(dir.path())
            .arg("run")
            .arg("--adapter")
            .arg("caddyfile")
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning caddy: {e}"));
        let mut caddy = Caddy {
            port,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = caddy.child.as_mut().unwrap().try_wait().expect("try_wait") {
                caddy.child = None;
                return Err(format!(
                    "caddy exited with {status} on port {port}:\n{}",
                    caddy.log()
                ));
            }
            // Caddy logs this only after every listener is bound, so together
            // with the connect it proves the port is ours.
            if caddy.log().contains("serving initial configuration")
                && TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            {
                return Ok(caddy);
            }
            if Instant::now() > deadline {
                let log = caddy.log();
                drop(caddy);
                panic!("caddy not ready on port {port} after 30 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        super::terminate(&mut child, Duration::from_secs(5));
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Replaces `from` by `to` in every non-comment line of `text`; returns the
/// number of replacements.
fn replace(text: &mut String, from: &str, to: &str) -> usize {
    let mut count = 0;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if !is_comment(line) && line.contains(from) {
            count += line.matches(from).count();
            out.push_str(&line.replace(from, to));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    *text = out;
    count
}

/// The example rendered for the tests: a global options block (no admin
/// endpoint, no automatic HTTPS) prepended, the site address turned into
/// `http://<app_host>:<port>` bound to 127.0.0.1, the upstreams pointed at
/// `vars`. Panics if a placeholder is missing or appears an unexpected number
/// of times.
pub fn render(vars: &CaddyVars, port: u16) -> String {
    let path = example_path(EXAMPLE);
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    assert!(
        !first.starts_with('{'),
        "{EXAMPLE}: has a global options block; the test renderer prepends its own"
    );

    let outposts = replace(&mut text, "outpost:9000", &vars.outpost.to_string());
    assert_eq!(
        outposts, 2,
        "{EXAMPLE}: expected `outpost:9000` twice (reverse_proxy for the outpost endpoints and \
         forward_auth)"
    );
    let apps = replace(
        &mut text,
        "app-backend:8080",
        &vars.app_upstream.to_string(),
    );
    assert_eq!(apps, 1, "{EXAMPLE}: expected `app-backend:8080` once");
    let sites = replace(
        &mut text,
        "app.example.com {",
        &format!("http://{}:{port} {{\n\tbind 127.0.0.1", vars.app_host),
    );
    assert_eq!(
        sites, 1,
        "{EXAMPLE}: expected one `app.example.com {{` site"
    );
    let leftover: Vec<&str> = text
        .lines()
        .filter(|l| !is_comment(l) && l.contains("example.com"))
        .collect();
    assert!(
        leftover.is_empty(),
        "{EXAMPLE}: unsubstituted host names: {leftover:?}"
    );
    format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{text}")
}
