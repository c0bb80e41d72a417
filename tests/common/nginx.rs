//! Runs a real nginx with one of the shipped configs from `nginx-examples/`,
//! rewritten for the test environment (loopback addresses, plain HTTP, a
//! random port), so the tests exercise exactly what users copy.
//!
//! Every placeholder substitution is asserted: if an example file changes so
//! that a placeholder is no longer found, `Nginx::start` panics instead of
//! silently testing something else.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which file(s) of `nginx-examples/` to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Example {
    /// `nginx/app.example.com.conf`: forward_single, internal auth location,
    /// keepalive `upstream ak_outpost` (the only example that honours
    /// [`NginxVars::outposts`]).
    Plain,
    /// `nginx/auth-domain-level.conf`: forward_domain; the app server block
    /// (`app_host`) and the central login server block (`auth_host`) share
    /// the port. The sign-in redirect `https://auth.example.com/...` becomes
    /// `http://<auth_host>:<port>/...`.
    DomainLevel,
    /// `swag/app.subdomain.conf` + `swag/authentik-server.conf` +
    /// `swag/authentik-location.conf` with the stand-ins from `tests/nginx/`
    /// for SWAG's `/config/nginx/{proxy,resolver,ssl}.conf`; loads the
    /// set-misc (and ndk) dynamic modules for `set_escape_uri`.
    Swag,
    /// `nginx/docs-style.conf`: authentik-docs style, one prefix location
    /// `/outpost.goauthentik.io` (no keepalive) serving the auth sub-request
    /// and the outpost endpoints.
    DocsStyle,
}

/// Values substituted for the placeholders of the example files.
#[derive(Clone, Debug)]
pub struct NginxVars {
    /// Replaces the outpost address (`outpost:9000`, SWAG: `authentik-server`
    /// + `:9000`).
    pub outpost: SocketAddr,
    /// Replaces the app upstream (`app-backend:8080`, SWAG: `$upstream_app` /
    /// `$upstream_port`).
    pub app_upstream: SocketAddr,
    /// Replaces `app.example.com` (e.g. `"app.example.test"`).
    pub app_host: String,
    /// Replaces `auth.example.com` (used by [`Example::DomainLevel`]).
    pub auth_host: String,
    /// If it has more than one entry, the `upstream ak_outpost` block lists
    /// all of them instead of `outpost` (round robin, for two-outpost tests).
    /// Only [`Example::Plain`] supports this; other examples panic.
    pub outposts: Vec<SocketAddr>,
}

/// A running nginx master process (one worker) listening on
/// `127.0.0.1:port`, with its config, logs and temp dirs in a private temp
/// directory. Dropping it stops nginx (SIGTERM, then SIGKILL after 5 s),
/// waits for it and removes the directory.
pub struct Nginx {
    /// The port every server block of the example listens on.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The nginx binary: `$NGINX_BIN` if set, else `/usr/sbin/nginx`, else
/// `nginx` from `PATH`. Panics if none exists.
pub fn nginx_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NGINX_BIN") {
        return PathBuf::from(bin);
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nginx");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("nginx not found (tried $NGINX_BIN, /usr/sbin/nginx, PATH); install nginx-light");
}

impl Nginx {
    /// Renders `example` with `vars`, checks it with `nginx -t` (panics with
    /// nginx's output on failure), starts nginx on a free port and waits up
    /// to 10 s until it accepts connections. Panics with nginx's stderr and
    /// error log if it does not come up. Blocking; fine to call from async
    /// tests.
    pub fn start(example: Example, vars: &NginxVars) -> Nginx {
        let mut last_error = String::new();
        // Retry a few times in case another process grabs the port between
        // our probe and nginx's bind().
        for _ in 0..5 {
            let port = super::free_port();
            match Nginx::try_start(example, vars, port) {
                Ok(nginx) => return nginx,
                Err(e) if e.contains("Address already in use") => last_error = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("nginx could not bind a port after 5 attempts:\n{last_error}");
    }

    /// `http://{host}:{port}`: the URL of a virtual host of this nginx. The
    /// host does not resolve; point it at 127.0.0.1 in the client (e.g.
    /// `reqwest::ClientBuilder::resolve`) or send it as the Host header.
    pub fn base_url(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    /// Contents of nginx's error log (level `info`), for diagnostics.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// Contents of nginx's access log, for diagnostics.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    fn try_start(example: Example, vars: &NginxVars, port: u16) -> Result<Nginx, String> {
        let dir = tempfile::Builder::new()
            .prefix("ak-outpost-nginx-")
            .tempdir()
            .expect("create nginx temp dir");
        // When run as root, nginx's workers run as `nobody` and must be able
        // to reach their temp dirs inside this directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod nginx temp dir");
        let tmp = dir.path();
        let site = render(example, vars, port, tmp);
        let conf = tmp.join("nginx.conf");
        fs::write(&conf, main_conf(example, tmp, &site)).expect("write nginx.conf");

        let bin = nginx_binary();
        let test = Command::new(&bin)
            .arg("-t")
            .arg("-p")
            .arg(tmp)
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap_or_else(|e| panic!("running {} -t: {e}", bin.display()));
        if !test.status.success() {
            panic!(
                "nginx -t failed for {example:?}:\n{}{}\n--- rendered config ---\n{}",
                String::from_utf8_lossy(&test.stdout),
                String::from_utf8_lossy(&test.stderr),
                dump_configs(tmp),
            );
        }

        let stdout = fs::File::create(tmp.join("stdout.log")).expect("create stdout.log");
        let stderr = fs::File::create(tmp.join("stderr.log")).expect("create stderr.log");
        let child = Command::new(&bin)
            .arg("-p")
            .arg(tmp)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut nginx = Nginx {
            port,
            dir,
            child: Some(child),
        };

        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = nginx.child.as_ref().unwrap().id().to_string();
        let pid_file = nginx.dir.path().join("nginx.pid");
        loop {
            if let Some(status) = nginx.child.as_mut().unwrap().try_wait().expect("try_wait") {
                nginx.child = None;
                return Err(format!(
                    "nginx ({example:?}) exited with {status} on port {port}:\n{}",
                    nginx.diagnostics()
                ));
            }
            // nginx writes its pid file only after it has bound the ports,
            // so this also proves the port is ours.
            let pid_written = fs::read_to_string(&pid_file)
                .map(|p| p.trim() == pid)
                .unwrap_or(false);
            if pid_written
                && TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                let diagnostics = nginx.diagnostics();
                drop(nginx);
                panic!("nginx ({example:?}) not ready on port {port} after 30 s:\n{diagnostics}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- stderr ---\n{}\n--- error.log ---\n{}",
            read("stderr.log"),
            read("error.log")
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets the master stop its worker (a SIGKILLed master would
        // leave the worker running and holding the port).
        super::terminate(&mut child, Duration::from_secs(5));
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx-examples")
}

fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nginx")
}

/// `ip` for IPv4, `[ip]` for IPv6 (as nginx wants it in URLs and `set`).
fn host_of(addr: &SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// The example's files being rewritten. Substitutions only touch
/// non-comment lines, and each one must match at least once across the set.
struct Files {
    example: Example,
    files: Vec<(String, String)>,
}

impl Files {
    fn load(example: Example, names: &[&str]) -> Files {
        let files = names
            .iter()
            .map(|name| {
                let path = examples_dir().join(name);
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                (name.to_string(), text)
            })
            .collect();
        Files { example, files }
    }

    /// Replaces `from` by `to` in every non-comment line; returns the number
    /// of replacements and panics if there were none.
    fn replace(&mut self, from: &str, to: &str) -> usize {
        let mut count = 0;
        self.map_lines(|line| {
            if is_comment(line) || !line.contains(from) {
                return Some(line.to_string());
            }
            count += line.matches(from).count();
            Some(line.replace(from, to))
        });
        assert!(
            count > 0,
            "{:?}: placeholder {from:?} not found in {:?} (did the example change?)",
            self.example,
            self.names()
        );
        count
    }

    /// Applies `f` to every line; `None` drops the line.
    fn map_lines(&mut self, mut f: impl FnMut(&str) -> Option<String>) {
        for (_, text) in &mut self.files {
            let mut out = String::with_capacity(text.len());
            for line in text.lines() {
                if let Some(new) = f(line) {
                    out.push_str(&new);
                    out.push('\n');
                }
            }
            *text = out;
        }
    }

    fn names(&self) -> Vec<&str> {
        self.files.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// `listen 443 ...` -> `listen 127.0.0.1:<port>;`, IPv6 listens, `ssl_*`
    /// and `http2` lines dropped. Returns (listen lines rewritten, ssl lines
    /// dropped).
    fn plain_http(&mut self, port: u16) -> (usize, usize) {
        let (mut listens, mut ssl) = (0, 0);
        self.map_lines(|line| {
            if is_comment(line) {
                return Some(line.to_string());
            }
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.starts_with("listen ") {
                if trimmed.contains("[::]") {
                    return None;
                }
                assert!(
                    trimmed.contains("443"),
                    "unexpected listen line (only 443 is rewritten): {line}"
                );
                listens += 1;
                return Some(format!("{indent}listen 127.0.0.1:{port};"));
            }
            if trimmed.starts_with("ssl_") {
                ssl += 1;
                return None;
            }
            if trimmed.starts_with("http2 ") {
                return None;
            }
            Some(line.to_string())
        });
        (listens, ssl)
    }

    fn write(&self, dir: &Path) {
        fs::create_dir_all(dir).expect("create config dir");
        for (name, text) in &self.files {
            let file = Path::new(name).file_name().expect("file name");
            fs::write(dir.join(file), text).expect("write rendered config");
        }
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Renders the example into `tmp`; returns the path of the file to include
/// at http level.
fn render(example: Example, vars: &NginxVars, port: u16, tmp: &Path) -> PathBuf {
    if vars.outposts.len() > 1 && example != Example::Plain {
        panic!("NginxVars::outposts with several outposts is only supported by Example::Plain");
    }
    let (names, main): (&[&str], &str) = match example {
        Example::Plain => (&["nginx/app.example.com.conf"], "app.example.com.conf"),
        Example::DomainLevel => (&["nginx/auth-domain-level.conf"], "auth-domain-level.conf"),
        Example::DocsStyle => (&["nginx/docs-style.conf"], "docs-style.conf"),
        Example::Swag => (
            &[
                "swag/app.subdomain.conf",
                "swag/authentik-server.conf",
                "swag/authentik-location.conf",
            ],
            "app.subdomain.conf",
        ),
    };
    let mut files = Files::load(example, names);

    let (listens, ssl) = files.plain_http(port);
    let expected_listens = if example == Example::DomainLevel {
        2
    } else {
        1
    };
    assert_eq!(
        listens, expected_listens,
        "{example:?}: expected {expected_listens} `listen 443` line(s)"
    );
    let app = vars.app_upstream;
    let outpost = vars.outpost;

    match example {
        Example::Plain | Example::DomainLevel | Example::DocsStyle => {
            assert!(ssl > 0, "{example:?}: no ssl_ lines found to drop");
            if example == Example::Plain && vars.outposts.len() > 1 {
                let servers: Vec<String> = vars
                    .outposts
                    .iter()
                    .map(|o| format!("server {o};"))
                    .collect();
                files.replace("server outpost:9000;", &servers.join(" "));
            } else {
                files.replace("outpost:9000", &outpost.to_string());
            }
            files.replace("http://app-backend:8080", &format!("http://{app}"));
            if example == Example::DomainLevel {
                files.replace(
                    "https://auth.example.com",
                    &format!("http://{}:{port}", vars.auth_host),
                );
                files.replace("auth.example.com", &vars.auth_host);
            }
            files.replace("app.example.com", &vars.app_host);
            files.write(tmp);
        }
        Example::Swag => {
            let swag = tmp.join("swag");
            files.replace(
                "set $upstream_authentik authentik-server;",
                &format!("set $upstream_authentik {};", host_of(&outpost)),
            );
            files.replace(
                "$upstream_authentik:9000",
                &format!("$upstream_authentik:{}", outpost.port()),
            );
            files.replace(
                "set $upstream_app app-backend;",
                &format!("set $upstream_app {};", host_of(&app)),
            );
            files.replace(
                "set $upstream_port 8080;",
                &format!("set $upstream_port {};", app.port()),
            );
            // Not substituted, only asserted: the app is plain HTTP.
            files.replace("set $upstream_proto http;", "set $upstream_proto http;");
            files.replace("app.example.com", &vars.app_host);
            files.replace("/config/nginx/", &format!("{}/", swag.display()));
            files.write(&swag);
            for support in ["proxy.conf", "resolver.conf", "ssl.conf", "http.conf"] {
                fs::copy(support_dir().join(support), swag.join(support))
                    .unwrap_or_else(|e| panic!("copying tests/nginx/{support}: {e}"));
            }
            return swag.join(main);
        }
    }
    tmp.join(main)
}

fn main_conf(example: Example, tmp: &Path, site: &Path) -> String {
    let t = tmp.display();
    let mut conf = String::new();
    conf.push_str(&format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\n\
         error_log {t}/error.log info;\npid {t}/nginx.pid;\n"
    ));
    if example == Example::Swag {
        for module in ["ndk_http_module.so", "ngx_http_set_misc_module.so"] {
            conf.push_str(&format!("load_module {};\n", find_module(module).display()));
        }
    }
    conf.push_str("events {\n    worker_connections 512;\n}\n");
    conf.push_str(&format!(
        "http {{\n\
         \x20   access_log {t}/access.log;\n\
         \x20   client_body_temp_path {t}/client_body;\n\
         \x20   proxy_temp_path {t}/proxy;\n\
         \x20   fastcgi_temp_path {t}/fastcgi;\n\
         \x20   uwsgi_temp_path {t}/uwsgi;\n\
         \x20   scgi_temp_path {t}/scgi;\n"
    ));
    if example == Example::Swag {
        conf.push_str(&format!("    include {t}/swag/http.conf;\n"));
    }
    conf.push_str(&format!("    include {};\n}}\n", site.display()));
    conf
}

/// Finds a dynamic module (`.so`) in the usual distribution locations.
fn find_module(name: &str) -> PathBuf {
    for dir in [
        "/usr/lib/nginx/modules",
        "/usr/share/nginx/modules",
        "/usr/lib64/nginx/modules",
        "/etc/nginx/modules",
    ] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "nginx module {name} not found; the SWAG example needs set_escape_uri: \
         apt-get install -y libnginx-mod-http-set-misc libnginx-mod-http-ndk"
    );
}

/// All rendered config files, for failure messages.
fn dump_configs(tmp: &Path) -> String {
    let mut out = String::new();
    let mut paths = vec![tmp.join("nginx.conf")];
    for dir in [tmp.to_path_buf(), tmp.join("swag")] {
        if let Ok(entries) = fs::read_dir(&dir) {
            let mut more: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "conf") && !paths.contains(p))
                .collect();
            more.sort();
            paths.extend(more);
        }
    }
    for path in paths {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&path) {
            let _ = f.read_to_string(&mut text);
        }
        out.push_str(&format!("### {}\n{text}\n", path.display()));
    }
    out
}
