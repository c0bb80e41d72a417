//! Container packaging, checked without a container engine (none runs on our machines):
//!
//! - `Dockerfile`: the runtime stage is a static-binary base, runs as a non-root uid, exposes
//!   9000/9443/9300, has a HEALTHCHECK through `ak-outpost healthcheck`, and copies exactly the
//!   binary the builder stage makes; replaying the builder's COPYs through `.dockerignore`
//!   gives cargo a manifest it accepts at each `cargo build`.
//! - The binary the Dockerfile builds: built here the same way (the builder stage's `ENV` lines
//!   and `cargo build` arguments are read from the Dockerfile), checked to be statically linked
//!   (no ELF interpreter, no DT_NEEDED) and run chrooted, as uid 65532, in a root that holds
//!   only what the runtime image holds: standalone (`--config`) and authentik mode (no
//!   arguments, the compose file's variables); it resolves `localhost` through /etc/hosts and
//!   a DNS name through /etc/resolv.conf (in a private network namespace), and
//!   `ak-outpost healthcheck` (the HEALTHCHECK) passes while it runs and fails once it stopped.
//! - `compose.outpost.yaml`: valid against the Compose Specification JSON schema
//!   (tests/schema/compose-spec.json, validated by ajv under node: tests/schema/validate.js),
//!   sets only environment variables that ak-outpost reads, and `.env.example` documents every
//!   variable it substitutes.
//!
//! The release build goes to `target/packaging` (its flags differ from a plain release build,
//! which it would otherwise invalidate). It is made once per test process; under nextest each
//! test is a process, and cargo's own lock and freshness check make the later ones instant.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Ports the image exposes: http, https, metrics.
const EXPOSED: [u16; 3] = [9000, 9443, 9300];
/// The image budget is 20 MB; the distroless static base takes about 2 MB of it.
const MAX_BINARY_BYTES: u64 = 17 * 1024 * 1024;
/// The uid/gid the runtime stage runs as (distroless `nonroot`).
const NONROOT_UID: u32 = 65532;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Dockerfile parsing
// ---------------------------------------------------------------------------------------------

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone)]
struct Instr {
    /// Index of the `FROM` stage it belongs to (0 = first stage).
    stage: usize,
    keyword: String,
    args: String,
}

struct Dockerfile {
    instrs: Vec<Instr>,
    /// (image, alias) per stage.
    stages: Vec<(String, Option<String>)>,
}

impl Dockerfile {
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut cur = String::new();
        for line in text.lines() {
            let t = line.trim();
            // Comment lines are dropped, also in the middle of a continued instruction.
            if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
                continue;
            }
            if let Some(body) = t.strip_suffix('\\') {
                cur.push_str(body);
                cur.push(' ');
            } else {
                cur.push_str(t);
                logical.push(std::mem::take(&mut cur));
            }
        }
        assert!(
            cur.trim().is_empty(),
            "Dockerfile ends inside a continued line"
        );
        let mut instrs = Vec::new();
        let mut stages = Vec::new();
        for l in logical {
            let l = l.trim().to_string();
            if l.is_empty() {
                continue;
            }
            let (kw, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
            let keyword = kw.to_ascii_uppercase();
            let args = args.trim().to_string();
            if keyword == "FROM" {
                let words: Vec<&str> = args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let alias = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    [_] => None,
                    other => panic!("cannot read FROM {other:?}"),
                };
                stages.push((words[0].to_string(), alias));
            }
            instrs.push(Instr {
                stage: stages.len().saturating_sub(1),
                keyword,
                args,
            });
        }
        assert!(!stages.is_empty(), "Dockerfile has no FROM");
        Dockerfile { instrs, stages }
    }

    fn stage_named(&self, alias: &str) -> usize {
        self.stages
            .iter()
            .position(|(_, a)| a.as_deref() == Some(alias))
            .unwrap_or_else(|| panic!("Dockerfile has no stage `AS {alias}`"))
    }

    fn final_stage(&self) -> usize {
        self.stages.len() - 1
    }

    fn in_stage<'a>(
        &'a self,
        stage: usize,
        keyword: &'a str,
    ) -> impl Iterator<Item = &'a Instr> + 'a {
        self.instrs
            .iter()
            .filter(move |i| i.stage == stage && i.keyword == keyword)
    }

    /// `ENV KEY=VALUE` lines of a stage (one variable per line, value optionally quoted).
    fn env(&self, stage: usize) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for i in self.in_stage(stage, "ENV") {
            let (k, v) = i
                .args
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {}: write it as KEY=VALUE", i.args));
            let v = v.trim();
            let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
                v[1..v.len() - 1].to_string()
            } else {
                assert!(
                    !v.contains(char::is_whitespace),
                    "ENV {}: one variable per ENV line (the test reads them that way)",
                    i.args
                );
                v.to_string()
            };
            out.insert(k.trim().to_string(), v);
        }
        out
    }
}

/// How the Dockerfile's RUN commands set `$target`: the builder's own host triple, which is
/// what this test builds for (`rustc -vV` here).
const HOST_TRIPLE_SH: &str = r#"target="$(rustc -vV | sed -n 's/^host: //p')""#;

/// `cargo build` arguments in a RUN command: the words after `cargo build` up to `&&`.
fn cargo_build_args(run: &str) -> Option<Vec<String>> {
    let start = run.find("cargo build")? + "cargo build".len();
    let rest = &run[start..];
    let end = rest.find("&&").unwrap_or(rest.len());
    Some(rest[..end].split_whitespace().map(str::to_string).collect())
}

/// The builder stage's `cargo build` arguments, with the shell-computed target triple replaced
/// by `target`; checks that the dependency layer and the real build use the same arguments.
fn dockerfile_build(df: &Dockerfile, target: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let builder = df.stage_named("builder");
    let builds: Vec<Vec<String>> = df
        .in_stage(builder, "RUN")
        .filter_map(|i| {
            let args = cargo_build_args(&i.args)?;
            assert!(
                i.args.contains(HOST_TRIPLE_SH),
                "a RUN with `cargo build` sets {HOST_TRIPLE_SH} (what this test builds for): {}",
                i.args
            );
            Some(args)
        })
        .map(|args| {
            let mut out = Vec::new();
            let mut it = args.into_iter().peekable();
            while let Some(a) = it.next() {
                if a == "--target" {
                    let t = it.next().expect("--target without a value");
                    assert_eq!(
                        t, "\"$target\"",
                        "the Dockerfile's --target should be \"$target\""
                    );
                    out.push(a);
                    out.push(target.to_string());
                } else {
                    assert!(
                        !a.contains('$'),
                        "cannot reproduce the shell word {a} of `cargo build`"
                    );
                    out.push(a);
                }
            }
            out
        })
        .collect();
    assert_eq!(
        builds.len(),
        2,
        "expected two `cargo build` runs (dependency cache, real build)"
    );
    assert_eq!(
        builds[0], builds[1],
        "the dependency-cache layer must build with the same arguments as the real build"
    );
    let args = builds[1].clone();
    for must in ["--release", "--locked", "--target"] {
        assert!(
            args.iter().any(|a| a == must),
            "`cargo build` lacks {must}: {args:?}"
        );
    }
    (df.env(builder), args)
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV prints host:")
        .trim()
        .to_string()
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("`{text}` is not an exec-form JSON array: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The release binary, built the Dockerfile's way
// ---------------------------------------------------------------------------------------------

static RELEASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn release_binary() -> PathBuf {
    RELEASE
        .get_or_init(build_release)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_release() -> Result<PathBuf, String> {
    let df = Dockerfile::parse(&read("Dockerfile"));
    let target = host_triple();
    let (env, args) = dockerfile_build(&df, &target);
    let target_dir = root().join("target").join("packaging");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .arg("build")
        .args(&args)
        .arg("--target-dir")
        .arg(&target_dir);
    // Only the Dockerfile's settings: nothing from the environment that runs the tests.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k == "RUSTFLAGS"
            || k == "CARGO_ENCODED_RUSTFLAGS"
            || k == "CARGO_TARGET_DIR"
            || k == "CARGO_BUILD_TARGET"
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_BUILD_RUSTFLAGS")
            || (k.starts_with("CARGO_TARGET_") && k.ends_with("_RUSTFLAGS"))
        {
            cmd.env_remove(&k);
        }
    }
    cmd.envs(&env);
    eprintln!(
        "packaging: building the image's binary: {env:?} cargo build {} --target-dir {}",
        args.join(" "),
        target_dir.display()
    );
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    eprintln!("packaging: cargo build took {:.0?}", started.elapsed());
    if !out.status.success() {
        return Err(format!(
            "the Dockerfile's release build fails here ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = target_dir.join(&target).join("release").join("ak-outpost");
    if !bin.is_file() {
        return Err(format!("cargo succeeded but {} is missing", bin.display()));
    }
    Ok(bin)
}

// ---------------------------------------------------------------------------------------------
// ELF inspection (no `file`/`readelf` needed)
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Linkage {
    interpreter: Option<String>,
    needed: usize,
}

/// Reads an x86-64/aarch64 ELF64 little-endian file's program interpreter and DT_NEEDED count.
fn linkage(bytes: &[u8]) -> Linkage {
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF",
        "not an ELF file"
    );
    assert_eq!(bytes[4], 2, "not ELF64");
    assert_eq!(bytes[5], 1, "not little-endian");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let mut interpreter = None;
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (p_type, offset, filesz) = (u32_at(ph), u64_at(ph + 8), u64_at(ph + 32));
        match p_type {
            3 => {
                // PT_INTERP
                let s = &bytes[offset..offset + filesz];
                interpreter = Some(
                    String::from_utf8_lossy(s)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
            2 => {
                // PT_DYNAMIC: count DT_NEEDED (tag 1) entries up to DT_NULL.
                let mut o = offset;
                while o + 16 <= offset + filesz {
                    match u64_at(o) {
                        0 => break,
                        1 => needed += 1,
                        _ => {}
                    }
                    o += 16;
                }
            }
            _ => {}
        }
    }
    Linkage {
        interpreter,
        needed,
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary as the image would
// ---------------------------------------------------------------------------------------------

/// Kills the child if the test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A stand-in for the outside world on loopback: answers OIDC discovery for the issuer
/// `http://localhost:<port>` and 404 to anything else; records every request head.
struct Stub {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// `host` is the name the issuer uses (it must resolve to 127.0.0.1 for the outpost).
    fn start(host: &str) -> Stub {
        let host = host.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (Arc::clone(&heads), Arc::clone(&stop));
        std::thread::spawn(move || {
            let issuer = format!("http://{host}:{port}");
            let doc = json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "userinfo_endpoint": format!("{issuer}/userinfo"),
            })
            .to_string();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let (status, body) = if head.starts_with("GET /.well-known/openid-configuration ") {
                    ("200 OK", doc.as_str())
                } else {
                    ("404 Not Found", "{}")
                };
                h.lock().unwrap().push(head);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Stub { port, heads, stop }
    }

    /// Request heads received so far whose request line starts with `prefix`.
    fn seen(&self, prefix: &str) -> Vec<String> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How commands reach the binary: inside a chroot that holds what the runtime image holds,
/// as uid 65532 (when this runs as root, as CI does), or directly on the host otherwise.
struct Runtime {
    /// The image's root file system, as far as the binary can see it.
    rootfs: PathBuf,
    chroot: bool,
}

impl Runtime {
    /// Lays out a root like gcr.io/distroless/static-debian12:nonroot plus the binary at
    /// /ak-outpost and a /config directory (the compose file's standalone mount).
    fn new(dir: &Path, binary: &Path, config: &str) -> Runtime {
        use std::os::unix::fs::PermissionsExt;
        let rootfs = dir.join("rootfs");
        for d in ["etc/ssl/certs", "config", "tmp", "home/nonroot"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let files: &[(&str, &str)] = &[
            (
                "etc/hosts",
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            ),
            (
                "etc/nsswitch.conf",
                "passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\n",
            ),
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            ),
            ("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
            // Docker writes its own; a resolver on this loopback only in the netns test.
            (
                "etc/resolv.conf",
                "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
            ),
            ("config/outpost.yaml", config),
        ];
        for (path, text) in files {
            std::fs::write(rootfs.join(path), text).unwrap();
        }
        // CA bundle (the base image ships Debian's); content is not exercised here.
        let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if ca.is_file() {
            std::fs::copy(ca, rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        }
        std::fs::copy(binary, rootfs.join("ak-outpost")).unwrap();
        std::fs::set_permissions(
            rootfs.join("ak-outpost"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        for d in [dir, rootfs.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        let is_root = is_root();
        let mut rt = Runtime {
            rootfs,
            chroot: false,
        };
        if is_root {
            let probe = rt.command_in_chroot(&["--version"]).output();
            match probe {
                Ok(o) if o.status.success() => {
                    rt.chroot = true;
                    eprintln!(
                        "packaging: the binary runs chrooted in {} as uid {NONROOT_UID}",
                        rt.rootfs.display()
                    );
                }
                Ok(o) => eprintln!(
                    "packaging: chroot unusable ({}), running on the host: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("packaging: no chroot ({e}), running on the host"),
            }
        } else {
            eprintln!("packaging: not root, so no chroot: the binary runs on the host file system");
        }
        rt
    }

    fn command_in_chroot(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(format!("--userspec={NONROOT_UID}:{NONROOT_UID}"))
            .arg(&self.rootfs)
            .arg("/ak-outpost")
            .args(args);
        c
    }

    /// `ak-outpost <args>` with an image-like environment (only what compose would set).
    /// `/config/...` arguments name files in the image root.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = if self.chroot {
            self.command_in_chroot(args)
        } else {
            let mapped: Vec<String> = args
                .iter()
                .map(|a| match a.strip_prefix('/') {
                    Some(p) if a.starts_with("/config/") => {
                        self.rootfs.join(p).display().to_string()
                    }
                    _ => a.to_string(),
                })
                .collect();
            let mut c = Command::new(self.rootfs.join("ak-outpost"));
            c.args(mapped);
            c
        };
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(env.iter().copied());
        c.stdin(Stdio::null());
        c
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A DNS server for the netns test: every A query for `name` gets 127.0.0.1, other names
/// NXDOMAIN, other types an empty answer. Counts the A answers it gave.
fn start_dns(name: &'static str, stop: Arc<AtomicBool>) -> Arc<AtomicUsize> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:53").expect("bind 127.0.0.1:53 in the netns");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&answered);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // QNAME labels from offset 12, then QTYPE and QCLASS.
            let mut i = 12;
            let mut labels = Vec::new();
            while i < n && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..(i + 1 + len).min(n)]).into_owned());
                i += 1 + len;
            }
            if i + 5 > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let question = &q[12..i + 5];
            let known = labels.join(".").eq_ignore_ascii_case(name);
            let answer_a = known && qtype == 1;
            let mut r = Vec::with_capacity(64);
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]);
            r.extend_from_slice(&[0, 1, 0, answer_a as u8, 0, 0, 0, 0]);
            r.extend_from_slice(question);
            if answer_a {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
                count.fetch_add(1, Ordering::Relaxed);
            }
            let _ = sock.send_to(&r, peer);
        }
    });
    answered
}

fn wait_status(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Plain HTTP/1.1 GET over loopback; returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------------------------------

fn compose() -> Value {
    let text = read("compose.outpost.yaml");
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("<<:")),
        "compose.outpost.yaml: no YAML merge keys (serde_yaml would not expand them)"
    );
    serde_yaml::from_str(&text).expect("compose.outpost.yaml is YAML that maps to JSON")
}

/// Runs tests/schema/validate.js; Ok(()) when valid, Err(errors) when not.
fn validate_compose(doc: &Value) -> Result<(), String> {
    let dir = root().join("tests").join("schema");
    assert!(
        dir.join("node_modules").join("ajv").is_dir(),
        "tests/schema/node_modules is missing: run scripts/install-deps.sh (npm ci in tests/schema)"
    );
    let mut child = Command::new("node")
        .current_dir(&dir)
        .arg("validate.js")
        .arg("compose-spec.json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (needed by the test suite, see scripts/install-deps.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        _ => panic!("the schema validator failed: {}", describe(&out)),
    }
}

fn services(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["services"].as_object().expect("services")
}

/// KEY → value of a service's `environment` (map or list form).
fn service_env(svc: &Value) -> BTreeMap<String, String> {
    match &svc["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                let s = e.as_str().expect("environment entries are strings");
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        other => panic!("environment: unexpected {other}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().expect("string").to_string())
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list of strings, got {other}"),
    }
}

/// Every `"AUTHENTIK_…"` / `"AK_OUTPOST_…"` string literal in src/: the variables the binary
/// reads (it reads no variable through a computed name).
fn variables_read_by_code() -> BTreeSet<String> {
    let re = regex::Regex::new(r#""((?:AUTHENTIK|AK_OUTPOST)_[A-Z0-9_]+)""#).unwrap();
    let mut out = BTreeSet::new();
    let mut dirs = vec![root().join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
            }
        }
    }
    out
}

/// Variables a standalone service's config file reads as `env://NAME`: the file named by
/// `--config <path>` in its command, found on the host through its bind mounts.
fn variables_read_by_config(svc: &Value) -> BTreeSet<String> {
    let cmd = strings(&svc["command"]);
    let Some(i) = cmd.iter().position(|a| a == "--config" || a == "-c") else {
        return BTreeSet::new();
    };
    let inside = cmd.get(i + 1).expect("--config needs a path");
    let host = strings(&svc["volumes"])
        .iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            let rest = inside.strip_prefix(dst)?.strip_prefix('/')?;
            Some(root().join(src).join(rest))
        })
        .unwrap_or_else(|| panic!("--config {inside} is not in a mounted directory"));
    let text = std::fs::read_to_string(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
    let re = regex::Regex::new(r"env://([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    re.captures_iter(&text).map(|c| c[1].to_string()).collect()
}

/// `${NAME}`, `${NAME:-x}`, `${NAME:?x}`, … substitutions in the compose file.
fn substitutions(text: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    re.captures_iter(text).map(|c| c[1].to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn dockerfile_runtime_stage_is_static_nonroot_with_ports_and_healthcheck() {
    let df = Dockerfile::parse(&read("Dockerfile"));
    let fin = df.final_stage();
    let (base, _) = &df.stages[fin];
    assert!(
        base == "scratch" || base.contains("distroless/static"),
        "the runtime stage should be an empty/static base (the binary is static), got {base}"
    );

    let user: Vec<&Instr> = df.in_stage(fin, "USER").collect();
    let user = user.last().expect("runtime stage sets USER");
    let (uid, gid) = user
        .args
        .split_once(':')
        .unwrap_or((&user.args, &user.args));
    let uid: u32 = uid
        .parse()
        .expect("USER is numeric (for Kubernetes runAsNonRoot)");
    let gid: u32 = gid.parse().expect("USER group is numeric");
    assert!(uid != 0 && gid != 0, "USER must not be root");
    assert_eq!(uid, NONROOT_UID, "distroless nonroot uid");

    let exposed: BTreeSet<u16> = df
        .in_stage(fin, "EXPOSE")
        .flat_map(|i| {
            i.args
                .split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse::<u16>().expect("port"))
        })
        .collect();
    assert_eq!(
        exposed,
        EXPOSED.into_iter().collect(),
        "EXPOSE 9000 9443 9300"
    );

    let hc: Vec<&Instr> = df.in_stage(fin, "HEALTHCHECK").collect();
    assert_eq!(hc.len(), 1, "one HEALTHCHECK");
    let (_, cmd) = hc[0]
        .args
        .split_once("CMD")
        .expect("HEALTHCHECK ... CMD [...]");
    assert_eq!(json_array(cmd.trim()), ["/ak-outpost", "healthcheck"]);

    let ep: Vec<&Instr> = df.in_stage(fin, "ENTRYPOINT").collect();
    assert_eq!(ep.len(), 1, "one ENTRYPOINT");
    assert_eq!(json_array(&ep[0].args), ["/ak-outpost"]);
    assert_eq!(
        df.in_stage(fin, "CMD").count(),
        0,
        "no CMD: no arguments means authentik mode"
    );

    // Every RUN is valid POSIX sh (the builder's /bin/sh is dash).
    for i in df.instrs.iter().filter(|i| i.keyword == "RUN") {
        let out = Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&i.args)
            .output()
            .unwrap();
        assert!(out.status.success(), "RUN {}: {}", i.args, describe(&out));
    }

    // The runtime copies exactly what the builder produced from cargo's output.
    let builder = df.stage_named("builder");
    let copy: Vec<&Instr> = df.in_stage(fin, "COPY").collect();
    assert_eq!(
        copy.len(),
        1,
        "the runtime stage copies one thing: the binary"
    );
    let words: Vec<&str> = copy[0].args.split_whitespace().collect();
    assert_eq!(words, ["--from=builder", "/ak-outpost", "/ak-outpost"]);
    let last_run = df
        .in_stage(builder, "RUN")
        .last()
        .expect("builder RUN")
        .args
        .clone();
    assert!(
        last_run.contains(r#"cp "target/$target/release/ak-outpost" /ak-outpost"#),
        "the builder copies cargo's release binary for $target to /ak-outpost: {last_run}"
    );
    // and the build arguments are ones this test can reproduce
    let (env, _) = dockerfile_build(&df, &host_triple());
    assert!(
        env.get("RUSTFLAGS")
            .is_some_and(|f| f.contains("+crt-static")),
        "the builder links statically: {env:?}"
    );
}

/// `.dockerignore` in the allow-list form this file uses: `*`, then `!name` per top-level entry.
struct DockerIgnore(Vec<String>);

impl DockerIgnore {
    fn load() -> DockerIgnore {
        let patterns: Vec<String> = read(".dockerignore")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        // This reader understands `*` and `!name` (top-level names) only; keep .dockerignore so.
        for p in &patterns {
            let name = p.strip_prefix('!').unwrap_or(p);
            assert!(
                p == "*" || (p.starts_with('!') && !name.contains(['*', '?', '[', '/'])),
                ".dockerignore: use `*` then `!name` lines (got {p})"
            );
        }
        DockerIgnore(patterns)
    }

    /// Whether a path (relative to the repository root) is in the build context.
    fn includes(&self, path: &str) -> bool {
        let top = path.trim_start_matches("./").split('/').next().unwrap();
        let mut inc = true;
        for p in &self.0 {
            if p == "*" {
                inc = false;
            } else if p.strip_prefix('!') == Some(top) {
                inc = true;
            }
        }
        inc
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// Replays the builder stage's COPY instructions (from the repository, through .dockerignore)
/// into `work`, calling `at_build(work, run)` where a RUN calls `cargo build`. The dependency
/// layer's stub sources and `rm -rf src` are replayed too.
fn replay_builder(
    df: &Dockerfile,
    ignore: &DockerIgnore,
    work: &Path,
    mut at_build: impl FnMut(&Path, &str),
) {
    let builder = df.stage_named("builder");
    for i in df.instrs.iter().filter(|i| i.stage == builder) {
        match i.keyword.as_str() {
            "COPY" | "ADD" => {
                let words: Vec<&str> = i
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, sources) = words.split_last().expect("COPY needs a destination");
                let into_dir = dest.ends_with('/') || *dest == "." || sources.len() > 1;
                for src in sources {
                    assert!(
                        ignore.includes(src),
                        "{} {}: `{src}` is excluded by .dockerignore",
                        i.keyword,
                        i.args
                    );
                    let from = root().join(src);
                    assert!(
                        from.exists(),
                        "{} {}: `{src}` does not exist",
                        i.keyword,
                        i.args
                    );
                    let to = if from.is_file() && into_dir {
                        work.join(dest).join(from.file_name().unwrap())
                    } else {
                        work.join(dest)
                    };
                    copy_tree(&from, &to);
                }
            }
            "RUN" if i.args.contains("cargo build") => {
                let stubs = i.args.contains("> src/main.rs");
                if stubs {
                    assert!(
                        i.args.contains("echo 'fn main() {}' > src/main.rs")
                            && i.args.contains(": > src/lib.rs"),
                        "the stub layer's commands changed; update replay_builder: {}",
                        i.args
                    );
                    std::fs::create_dir_all(work.join("src")).unwrap();
                    std::fs::write(work.join("src/main.rs"), "fn main() {}\n").unwrap();
                    std::fs::write(work.join("src/lib.rs"), "").unwrap();
                }
                at_build(work, &i.args);
                if i.args.contains("rm -rf src") {
                    std::fs::remove_dir_all(work.join("src")).unwrap();
                }
            }
            _ => {}
        }
    }
}

#[test]
fn docker_build_context_holds_what_each_cargo_build_needs() {
    let df = Dockerfile::parse(&read("Dockerfile"));
    let ignore = DockerIgnore::load();
    for big in ["target", ".git", "tests", "node_modules", ".env", "config"] {
        assert!(!ignore.includes(big), ".dockerignore should exclude {big}");
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = host_triple();
    let mut builds = 0;
    replay_builder(&df, &ignore, &work, |work, run| {
        builds += 1;
        // Cargo reads the manifest (and finds every declared target) and the lock file; no
        // compiling. Offline first (the test build filled the registry cache); online only if
        // a crate for another configuration is missing from the cache.
        let fetch = |offline: bool| {
            let mut c = Command::new(&cargo);
            c.args(["fetch", "--locked", "--target", &target]);
            if offline {
                c.arg("--offline");
            }
            c.arg("--manifest-path")
                .arg(work.join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", dir.path().join("target"))
                .output()
                .unwrap()
        };
        let mut out = fetch(true);
        if !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("--offline was specified")
        {
            out = fetch(false);
        }
        assert!(
            out.status.success(),
            "cargo rejects the builder's files at `{run}`: {}",
            describe(&out)
        );
    });
    assert_eq!(
        builds, 2,
        "two `cargo build` runs (dependency cache, real build)"
    );

    // The final layer holds every file the sources include, and no build script is missing.
    assert!(
        !root().join("build.rs").exists() || work.join("build.rs").exists(),
        "build.rs exists: allow it in .dockerignore and COPY it in the Dockerfile"
    );
    let inc = regex::Regex::new(r#"include_(?:str|bytes)!\(\s*"([^"]+)""#).unwrap();
    let mut dirs = vec![root().join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let rel_dir = p
                    .parent()
                    .unwrap()
                    .strip_prefix(root())
                    .unwrap()
                    .to_path_buf();
                for c in inc.captures_iter(&text) {
                    assert!(
                        work.join(&rel_dir).join(&c[1]).exists(),
                        "{} includes {}, which the image build does not copy",
                        p.display(),
                        &c[1]
                    );
                }
            }
        }
    }
}

#[test]
fn release_binary_is_statically_linked_and_small() {
    let bin = release_binary();
    let bytes = std::fs::read(&bin).unwrap();
    let l = linkage(&bytes);
    assert_eq!(
        l.interpreter,
        None,
        "{} needs a dynamic loader: {l:?}",
        bin.display()
    );
    assert_eq!(
        l.needed,
        0,
        "{} needs shared libraries: {l:?}",
        bin.display()
    );
    if let Ok(out) = Command::new("ldd").arg(&bin).output() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("statically linked") || text.contains("not a dynamic executable"),
            "ldd {}: {text}",
            bin.display()
        );
    }
    let size = bytes.len() as u64;
    eprintln!("packaging: {} is {size} bytes", bin.display());
    assert!(
        size <= MAX_BINARY_BYTES,
        "the binary is {size} bytes; with the ~2 MB base that breaks the 20 MB image budget"
    );
}

#[test]
fn release_binary_serves_resolves_and_passes_its_healthcheck_in_an_image_like_root() {
    let bin = release_binary();
    let dir = tempfile::tempdir().unwrap();
    let idp = Stub::start("localhost");
    let (http, metrics) = (free_port(), free_port());
    // The compose file's standalone service: secrets from the environment via env://.
    let config = format!(
        "listen:\n  http: \"127.0.0.1:{http}\"\n  metrics: \"127.0.0.1:{metrics}\"\n\
         secret: env://AK_OUTPOST_SECRET\n\
         provider:\n  issuer: http://localhost:{idp}/\n  client_id: packaging\n  client_secret: env://AK_OUTPOST_CLIENT_SECRET\n\
         log:\n  level: info\n  format: json\n\
         applications:\n  - name: app\n    external_host: http://app.localhost\n    mode: forward_single\n",
        idp = idp.port
    );
    let rt = Runtime::new(dir.path(), &bin, &config);
    eprintln!(
        "packaging: running {} (chroot as uid {NONROOT_UID}: {})",
        rt.rootfs.display(),
        rt.chroot
    );
    let env = [
        (
            "AK_OUTPOST_SECRET",
            "packaging-test-secret-0123456789abcdefghijklmnop",
        ),
        ("AK_OUTPOST_CLIENT_SECRET", "packaging-client-secret"),
    ];

    // --version, as `docker run IMAGE --version`.
    let out = rt.command(&["--version"], &[]).output().unwrap();
    assert!(out.status.success(), "--version: {}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ak-outpost {}", env!("CARGO_PKG_VERSION"))
    );

    // The standalone service's command line.
    let log = dir.path().join("outpost.log");
    let child = rt
        .command(&["--config", "/config/outpost.yaml"], &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut outpost = Running(Some(child));
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let healthcheck = || {
        rt.command(&["healthcheck", "--config", "/config/outpost.yaml"], &env)
            .output()
            .unwrap()
    };

    // The HEALTHCHECK command passes once the outpost listens.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = healthcheck();
        if out.status.success() {
            break;
        }
        if let Some(status) = outpost.0.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "the outpost exited ({status}) before it was healthy:\n{}",
                logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "healthcheck never passed: {}\noutpost log:\n{}",
            describe(&out),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Ready means OIDC discovery worked: `localhost` was resolved (getaddrinfo in a static
    // binary, through the root's /etc/nsswitch.conf and /etc/hosts) and fetched over HTTP.
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http_get(metrics_addr, "/outpost.goauthentik.io/ready");
        if matches!(got, Some((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready (last answer {got:?}); requests seen: {:?}\noutpost log:\n{}",
            idp.heads.lock().unwrap(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !idp.seen("GET /.well-known/openid-configuration ")
            .is_empty(),
        "discovery was fetched from localhost"
    );
    let ping = http_get(
        ([127, 0, 0, 1], http).into(),
        "/outpost.goauthentik.io/ping",
    );
    assert!(
        matches!(ping, Some((204, _))),
        "ping on the http listener: {ping:?}"
    );

    // `docker stop` sends SIGTERM: a clean exit, after which the healthcheck fails with 1.
    let mut child = outpost.0.take().unwrap();
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_status(&mut child, Duration::from_secs(15));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM:\n{}", logs()));
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", logs());
    let out = healthcheck();
    assert_eq!(
        out.status.code(),
        Some(1),
        "healthcheck of a stopped outpost: {}",
        describe(&out)
    );
}

/// Set (to the binary's path) in the copy of this test that runs inside a network namespace.
const NETNS_BINARY_ENV: &str = "AK_OUTPOST_PACKAGING_NETNS_BINARY";

#[test]
fn release_binary_resolves_names_through_dns_in_an_image_like_root() {
    // glibc linked statically still resolves through /etc/resolv.conf (Docker's embedded DNS
    // in a container). Checked in a private network namespace, where this test can answer
    // DNS on 127.0.0.1:53: the test re-runs itself there under `unshare -n`.
    const NAME: &str = "authentik.packaging.test";
    let Some(bin) = std::env::var_os(NETNS_BINARY_ENV).map(PathBuf::from) else {
        let bin = release_binary();
        let netns = Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !is_root() || !netns {
            eprintln!("packaging: SKIPPED the DNS check: needs root and `unshare -n`");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("unshare")
            .arg("-n")
            .arg(exe)
            .args([
                "release_binary_resolves_names_through_dns_in_an_image_like_root",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NETNS_BINARY_ENV, &bin)
            .stdin(Stdio::null())
            .output()
            .expect("unshare");
        assert!(
            out.status.success(),
            "the DNS check in a network namespace failed: {}",
            describe(&out)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("1 passed"),
            "the DNS check did not run in the namespace: {text}"
        );
        return;
    };
    // Inside the namespace: loopback only, and it starts down.
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip (iproute2)");
    assert!(up.success(), "ip link set lo up");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = start_dns(NAME, Arc::clone(&stop));
    let idp = Stub::start(NAME);
    let dir = tempfile::tempdir().unwrap();
    let (http, metrics) = (free_port(), free_port());
    let config = format!(
        "listen:\n  http: \"127.0.0.1:{http}\"\n  metrics: \"127.0.0.1:{metrics}\"\n\
         secret: packaging-test-secret-0123456789abcdefghijklmnop\n\
         provider:\n  issuer: http://{NAME}:{idp}/\n  client_id: packaging\n  client_secret: x\n\
         log:\n  format: json\n\
         applications:\n  - name: app\n    external_host: http://app.localhost\n    mode: forward_single\n",
        idp = idp.port
    );
    let rt = Runtime::new(dir.path(), &bin, &config);
    let log = dir.path().join("outpost.log");
    let child = rt
        .command(&["--config", "/config/outpost.yaml"], &[])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _outpost = Running(Some(child));
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = http_get(metrics_addr, "/outpost.goauthentik.io/ready");
        if matches!(got, Some((200, _))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never ready (last answer {got:?}); DNS answers given: {}\noutpost log:\n{}",
            answered.load(Ordering::Relaxed),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        answered.load(Ordering::Relaxed) >= 1,
        "the name was resolved through DNS"
    );
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn compose_file_is_valid_against_the_compose_specification() {
    let doc = compose();
    if let Err(e) = validate_compose(&doc) {
        panic!("compose.outpost.yaml does not match tests/schema/compose-spec.json:\n{e}");
    }
    // The validator does reject what the schema forbids.
    let mut bad = doc.clone();
    bad["services"]["authentik-proxy"]["restart_policy"] = json!("always");
    assert!(
        validate_compose(&bad).is_err(),
        "an unknown service key must fail validation"
    );
    let mut bad = doc;
    bad["services"]["authentik-proxy"]["ports"] = json!({"9000": 9000});
    assert!(
        validate_compose(&bad).is_err(),
        "ports as a map must fail validation"
    );
}

#[test]
fn compose_file_has_the_remote_server_and_standalone_services() {
    let doc = compose();
    let svcs = services(&doc);

    let ak = &svcs["authentik-proxy"];
    let env = service_env(ak);
    assert_eq!(env["AUTHENTIK_HOST"], "${HOST}");
    assert_eq!(env["AUTHENTIK_TOKEN"], "${TOKEN}");
    assert!(
        env["AUTHENTIK_INSECURE"].starts_with("${INSECURE"),
        "{env:?}"
    );
    let ports = strings(&ak["ports"]);
    for p in ["9000:9000", "9443:9443"] {
        assert!(
            ports.iter().any(|x| x == p),
            "authentik-proxy publishes {p}: {ports:?}"
        );
    }
    assert!(
        ak.get("profiles").is_none(),
        "authentik-proxy runs by default"
    );
    assert!(
        ak.get("command").is_none(),
        "authentik mode: the image's entrypoint without arguments"
    );

    let sa = &svcs["ak-outpost-standalone"];
    assert_eq!(strings(&sa["profiles"]), ["standalone"]);
    assert_eq!(
        strings(&sa["command"]),
        ["--config", "/config/outpost.yaml"]
    );
    assert!(
        strings(&sa["volumes"])
            .iter()
            .any(|v| v == "./config:/config:ro"),
        "standalone mounts ./config read-only"
    );

    for (name, svc) in svcs {
        assert_eq!(svc["restart"], "unless-stopped", "{name}: restart policy");
        let test = strings(&svc["healthcheck"]["test"]);
        assert_eq!(
            test.first().map(String::as_str),
            Some("CMD"),
            "{name}: exec-form healthcheck"
        );
        assert_eq!(
            &test[1..3],
            ["/ak-outpost", "healthcheck"],
            "{name}: healthcheck"
        );
        assert!(
            svc["networks"].get("authentik-outpost").is_some(),
            "{name}: on the authentik-outpost network"
        );
        assert!(
            svc.get("env_file").is_none(),
            "{name}: env_file would hide variables from the env check"
        );
    }
    assert_eq!(
        doc["networks"]["authentik-outpost"]["name"], "authentik-outpost",
        "the network has a fixed name SWAG can join as external"
    );
}

#[test]
fn compose_sets_only_environment_variables_the_binary_reads() {
    let doc = compose();
    let from_code = variables_read_by_code();
    let mut unread = Vec::new();
    for (name, svc) in services(&doc) {
        let from_config = variables_read_by_config(svc);
        for key in service_env(svc).keys() {
            if !from_code.contains(key) && !from_config.contains(key) {
                unread.push(format!("{name}: {key}"));
            }
        }
    }
    assert!(
        unread.is_empty(),
        "compose.outpost.yaml sets variables nothing reads: {unread:?}\n\
         (read by src/: {from_code:?}; a standalone service may also set what its --config file \
         reads as env://NAME)"
    );
}

#[test]
fn env_example_documents_every_compose_substitution() {
    let compose_text = read("compose.outpost.yaml");
    let defined: BTreeSet<String> = read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect();
    let used = substitutions(&compose_text);
    for v in ["HOST", "TOKEN", "INSECURE"] {
        assert!(used.contains(v), "compose uses ${{{v}}}");
    }
    let missing: Vec<_> = used.difference(&defined).collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

#[test]
fn release_binary_runs_the_entrypoint_in_authentik_mode_with_the_compose_environment() {
    // The image's ENTRYPOINT without arguments, with the variables compose.outpost.yaml sets
    // (listeners moved to free ports: this machine is shared). The authentik API is a stub
    // that answers 404, so the outpost keeps retrying; the listeners are up meanwhile.
    let bin = release_binary();
    let dir = tempfile::tempdir().unwrap();
    let api = Stub::start("localhost");
    let rt = Runtime::new(dir.path(), &bin, "");
    let host = format!("http://localhost:{}/", api.port);
    let (http, https, metrics) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let env = [
        ("AUTHENTIK_HOST", host.as_str()),
        ("AUTHENTIK_TOKEN", "packaging-token"),
        ("AUTHENTIK_INSECURE", "false"),
        ("AUTHENTIK_LISTEN__HTTP", http.as_str()),
        ("AUTHENTIK_LISTEN__HTTPS", https.as_str()),
        ("AUTHENTIK_LISTEN__METRICS", metrics.as_str()),
    ];
    let log = dir.path().join("outpost.log");
    let child = rt
        .command(&[], &env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut outpost = Running(Some(child));
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    // The image's HEALTHCHECK exactly: no arguments, the container's environment.
    let healthcheck = || rt.command(&["healthcheck"], &env).output().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = healthcheck();
        if out.status.success() {
            break;
        }
        if let Some(status) = outpost.0.as_mut().unwrap().try_wait().unwrap() {
            panic!("the outpost exited ({status}):\n{}", logs());
        }
        assert!(
            Instant::now() < deadline,
            "healthcheck never passed: {}\noutpost log:\n{}",
            describe(&out),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // It found authentik by name (`localhost`) and called the API with the token.
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls = loop {
        let calls = api.seen("GET /api/v3/outposts/instances/");
        if !calls.is_empty() {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "no API call reached AUTHENTIK_HOST; requests seen: {:?}\noutpost log:\n{}",
            api.heads.lock().unwrap(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        calls[0]
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Bearer packaging-token")),
        "the API call carries the token: {}",
        calls[0]
    );

    // `docker stop`: SIGTERM, then SIGKILL after 10 s.
    let mut child = outpost.0.take().unwrap();
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_status(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let status = status.unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", logs()));
    assert!(status.success(), "exit after SIGTERM: {status}\n{}", logs());
    let out = healthcheck();
    assert_eq!(
        out.status.code(),
        Some(1),
        "healthcheck of a stopped outpost: {}",
        describe(&out)
    );
}
