# ak-outpost container image: a drop-in for ghcr.io/goauthentik/proxy.
#
#   docker build -t ghcr.io/ak-outpost/ak-outpost:latest .
#   docker run -e AUTHENTIK_HOST=https://authentik.example.com -e AUTHENTIK_TOKEN=... \
#              -p 9000:9000 -p 9443:9443 ghcr.io/ak-outpost/ak-outpost:latest
#   standalone: ... ghcr.io/ak-outpost/ak-outpost:latest --config /config/outpost.yaml
#
# Decisions (tests/packaging.rs checks them and builds the same binary without a container engine):
#
# - Static binary: glibc static-pie (`-C target-feature=+crt-static` on the *-linux-gnu target),
#   not musl. The test machines have only the gnu target, so this is the exact binary the test
#   suite builds, link-checks (no PT_INTERP, no DT_NEEDED) and runs chrooted in a root that
#   holds only what the runtime image holds, with name lookups through /etc/hosts and through
#   /etc/resolv.conf (glibc's files and dns resolvers are built in; no NSS module is loaded).
#   glibc also keeps its fast allocator (musl's malloc slows a multi-threaded tokio server).
#   The builder is Debian 12 (bookworm), the same glibc as the machines the tests run on.
# - `--target <host triple>` is passed explicitly: then RUSTFLAGS reach only the binary's own
#   crates, not build scripts or proc-macros (which cannot be linked statically). The triple is
#   the builder's own, so `docker buildx --platform linux/arm64` builds an arm64 image as well.
# - Runtime base: gcr.io/distroless/static-debian12:nonroot (~2 MB): CA certificates
#   (/etc/ssl/certs/ca-certificates.crt, for https to authentik), /etc/passwd with the
#   `nonroot` user (uid/gid 65532), /etc/nsswitch.conf, tzdata; no shell, no package manager.
#   Image = base + one stripped binary (~8 MB today): ~10 MB, under the 20 MB target.
# - Code layout: build.rs hands lld build/symbol-order.txt, the functions a running outpost
#   executes (bench/symbol-order.sh), so they sit together and a running outpost maps fewer
#   code pages (x86_64 only: arm64 links as before). The file names functions as this exact
#   toolchain and build configuration name them, hence the pinned patch release of Rust and
#   the `strip` after the build (`bench/run.sh` reports how many of the names still match).
# - Dependency cache: the dependency graph is built once against stub sources, in its own layer,
#   and rebuilt only when Cargo.toml, Cargo.lock or benches/ change.
# - The build context is only Cargo.toml, Cargo.lock, benches/, build.rs, build/ and src/
#   (see .dockerignore).

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
# Build settings. tests/packaging.rs reads these ENV lines (one variable per line) and passes
# them to its own `cargo build`, so keep every build setting here.
ENV RUSTFLAGS="-C target-feature=+crt-static"
WORKDIR /build

# Dependencies only, against stub sources; cached until Cargo.toml / Cargo.lock / benches
# change. benches/ is here because Cargo.toml declares [[bench]] targets, and cargo refuses a
# manifest whose declared targets are missing (they are not built: `cargo build` skips them).
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && target="$(rustc -vV | sed -n 's/^host: //p')" \
 && cargo build --release --locked --target "$target" \
 && rm -rf src

# The real sources, and build.rs with the link layout it passes to the linker
# (build/symbol-order.txt). `touch` makes sure cargo rebuilds the crate over the stub build
# even if COPY kept older modification times. Symbols are stripped after the build, not by
# cargo: a cargo profile that strips is another build configuration, whose symbol names
# differ from the ones bench/symbol-order.sh recorded. The binary is checked to run and to be
# static.
COPY build.rs ./
COPY build ./build
COPY src ./src
RUN touch src/lib.rs src/main.rs \
 && target="$(rustc -vV | sed -n 's/^host: //p')" \
 && cargo build --release --locked --target "$target" \
 && cp "target/$target/release/ak-outpost" /ak-outpost \
 && strip /ak-outpost \
 && /ak-outpost --version \
 && { ldd /ak-outpost 2>&1 | grep -Eq 'statically linked|not a dynamic executable' \
      || { echo 'ak-outpost is not statically linked' >&2; exit 1; }; }

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="ak-outpost" \
      org.opencontainers.image.description="Forward-auth outpost, drop-in for the authentik proxy outpost"
COPY --from=builder /ak-outpost /ak-outpost
# distroless "nonroot"; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 9000 http (auth endpoints / proxy), 9443 https, 9300 metrics + ping.
EXPOSE 9000 9443 9300
# Probes /outpost.goauthentik.io/ping on the metrics listener; exit 0 healthy, 1 not.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/ak-outpost", "healthcheck"]
# No arguments: authentik mode (AUTHENTIK_HOST / AUTHENTIK_TOKEN from the environment).
# Standalone: pass `--config /config/outpost.yaml` as the command.
ENTRYPOINT ["/ak-outpost"]
