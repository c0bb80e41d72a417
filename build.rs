//! Build script: the link layout of the release binary.
//!
//! `build/symbol-order.txt` (written by `bench/symbol-order.sh`) lists the functions a running
//! outpost executes, the most executed first. Passed to lld as `--symbol-ordering-file`, it
//! makes the linker place them next to each other at the start of `.text`, so serving and
//! logging in touch ≈ 1.4 MiB of code pages instead of ≈ 4 MiB spread over the whole binary:
//! the kernel maps code into a process in 64 KiB chunks around each page that runs, and each
//! mapped page counts in RSS. Code and behaviour are the same either way.
//!
//! Only where the linker is known to be lld: release builds for x86_64-unknown-linux-gnu with
//! rustc ≥ 1.90 (rust-lld is that target's default linker since, in the Rust project's own
//! builds), the toolchain's self-contained lld present, and no linker chosen in the
//! configuration or in RUSTFLAGS. Anywhere else the binary links as it always did.
//! `AK_OUTPOST_SYMBOL_ORDER=0` turns it off (a toolchain built to link with another linker
//! despite all that would fail on the unknown option).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const ORDER_FILE: &str = "build/symbol-order.txt";

fn main() {
    println!("cargo::rerun-if-changed={ORDER_FILE}");
    println!("cargo::rerun-if-env-changed=AK_OUTPOST_SYMBOL_ORDER");
    let Some(dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = PathBuf::from(dir).join(ORDER_FILE);
    if !order.is_file() || env::var("AK_OUTPOST_SYMBOL_ORDER").as_deref() == Ok("0") {
        return;
    }
    if !linker_is_rust_lld() {
        return;
    }
    let order = order.display();
    println!("cargo::rustc-link-arg-bin=ak-outpost=-Wl,--symbol-ordering-file={order}");
    // Names of functions that a change of the code removed are skipped, not reported.
    println!("cargo::rustc-link-arg-bin=ak-outpost=-Wl,--no-warn-symbol-ordering");
}

/// Whether this build links with rustc's default lld for x86_64 Linux (GNU).
fn linker_is_rust_lld() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    if var("TARGET") != "x86_64-unknown-linux-gnu" || var("PROFILE") != "release" {
        return false;
    }
    // A linker set in .cargo/config.toml or CARGO_TARGET_<triple>_LINKER.
    if env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90) && has_self_contained_lld()
}

/// What `$RUSTC <args>` prints, if it runs.
fn rustc(args: &[&str]) -> Option<String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc).args(args).output().ok()?;
    out.status.success().then_some(())?;
    String::from_utf8(out.stdout).ok()
}

/// The minor version of the compiler building this crate (`1.N.p`).
fn rustc_minor() -> Option<u32> {
    let text = rustc(&["-vV"])?;
    let release = text.lines().find_map(|l| l.strip_prefix("release: "))?;
    let mut parts = release.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}

/// Whether the toolchain ships the lld it links with by default (rustup's toolchains do;
/// a distribution's rustc built to use the system linker may not).
fn has_self_contained_lld() -> bool {
    let (Some(sysroot), Ok(host)) = (rustc(&["--print", "sysroot"]), env::var("HOST")) else {
        return false;
    };
    PathBuf::from(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/gcc-ld/ld.lld")
        .is_file()
}
