#!/usr/bin/env python3
"""Renders a shipped nginx example for a loopback benchmark, the way the test harness
(tests/common/nginx.rs) does: `listen 443 ssl` -> `listen 127.0.0.1:<port>`, IPv6 listens,
ssl_* and http2 lines dropped, placeholders replaced (each replacement must match, so a
changed example fails loudly instead of benchmarking something else).

Differences from the test harness, on purpose: access_log off and error_log at `warn` (logging
costs the same on both sides of a comparison and would only dilute it), and more
worker_connections.

usage: render_nginx.py plain|swag|docs <dir> <port> <outpost host:port> <app host:port> <app host name> [app-keepalive]
Writes <dir>/nginx.conf (plus the example's files) and prints its path.

With `app-keepalive` (plain and docs only) the app is reached through an `upstream` block with
`keepalive 64` instead of the example's direct `proxy_pass http://app-backend:8080` (a new
connection per request), so that the measurement is about the auth sub-request. The example's
own auth upstream (`keepalive 64`) is left as shipped.
"""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "nginx-examples")
SUPPORT = os.path.join(ROOT, "tests", "nginx")

FILES = {
    "plain": (["nginx/app.example.com.conf"], "app.example.com.conf"),
    "docs": (["nginx/docs-style.conf"], "docs-style.conf"),
    "swag": (["swag/app.subdomain.conf", "swag/authentik-server.conf",
              "swag/authentik-location.conf"], "app.subdomain.conf"),
}


def is_comment(line):
    return line.lstrip().startswith("#")


class Files:
    def __init__(self, names):
        self.files = []
        for n in names:
            with open(os.path.join(EXAMPLES, n)) as f:
                self.files.append((n, f.read()))

    def map_lines(self, fn):
        out = []
        for name, text in self.files:
            lines = []
            for line in text.splitlines():
                new = fn(line)
                if new is not None:
                    lines.append(new)
            out.append((name, "\n".join(lines) + "\n"))
        self.files = out

    def replace(self, old, new):
        count = 0

        def fn(line):
            nonlocal count
            if is_comment(line) or old not in line:
                return line
            count += line.count(old)
            return line.replace(old, new)

        self.map_lines(fn)
        if count == 0:
            sys.exit(f"render_nginx: placeholder {old!r} not found (did the example change?)")

    def plain_http(self, port):
        listens = 0

        def fn(line):
            nonlocal listens
            if is_comment(line):
                return line
            t = line.lstrip()
            indent = line[: len(line) - len(t)]
            if t.startswith("listen "):
                if "[::]" in t:
                    return None
                if "443" not in t:
                    sys.exit(f"render_nginx: unexpected listen line: {line}")
                listens += 1
                return f"{indent}listen 127.0.0.1:{port} reuseport backlog=4096;"
            if t.startswith("ssl_") or t.startswith("http2 "):
                return None
            return line

        self.map_lines(fn)
        if listens != 1:
            sys.exit(f"render_nginx: expected one `listen 443` line, found {listens}")

    def write(self, d):
        os.makedirs(d, exist_ok=True)
        for name, text in self.files:
            with open(os.path.join(d, os.path.basename(name)), "w") as f:
                f.write(text)


def main():
    if len(sys.argv) not in (7, 8):
        sys.exit(__doc__)
    example, d, port, outpost, app, app_host = sys.argv[1:7]
    app_keepalive = len(sys.argv) == 8 and sys.argv[7] == "app-keepalive"
    if app_keepalive and example == "swag":
        sys.exit("render_nginx: app-keepalive is not supported for swag (its proxy.conf closes app connections)")
    names, main_file = FILES[example]
    files = Files(names)
    files.plain_http(int(port))
    o_host, o_port = outpost.rsplit(":", 1)
    a_host, a_port = app.rsplit(":", 1)
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    if example in ("plain", "docs"):
        files.replace("outpost:9000", outpost)
        if app_keepalive:
            files.replace("proxy_pass http://app-backend:8080;",
                          'proxy_pass http://bench_app; proxy_http_version 1.1; proxy_set_header Connection "";')
            name, text = files.files[0]
            files.files[0] = (name, f"upstream bench_app {{\n    server {app};\n    keepalive 64;\n}}\n" + text)
        else:
            files.replace("http://app-backend:8080", f"http://{app}")
        files.replace("app.example.com", app_host)
        files.write(d)
        site = os.path.join(d, main_file)
        modules = ""
        extra_http = ""
    else:
        swag = os.path.join(d, "swag")
        files.replace("set $upstream_authentik authentik-server;", f"set $upstream_authentik {o_host};")
        files.replace("$upstream_authentik:9000", f"$upstream_authentik:{o_port}")
        files.replace("set $upstream_app app-backend;", f"set $upstream_app {a_host};")
        files.replace("set $upstream_port 8080;", f"set $upstream_port {a_port};")
        files.replace("app.example.com", app_host)
        files.replace("/config/nginx/", swag + "/")
        files.write(swag)
        for s in ["proxy.conf", "resolver.conf", "ssl.conf", "http.conf"]:
            shutil.copy(os.path.join(SUPPORT, s), os.path.join(swag, s))
        site = os.path.join(swag, main_file)
        modules = "".join(f"load_module {find_module(m)};\n"
                          for m in ["ndk_http_module.so", "ngx_http_set_misc_module.so"])
        extra_http = f"    include {swag}/http.conf;\n"
    conf = (
        "daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"error_log {d}/error.log warn;\npid {d}/nginx.pid;\n"
        f"{modules}"
        "events {\n    worker_connections 4096;\n}\n"
        "http {\n"
        "    access_log off;\n"
        f"    client_body_temp_path {d}/client_body;\n"
        f"    proxy_temp_path {d}/proxy;\n"
        f"    fastcgi_temp_path {d}/fastcgi;\n"
        f"    uwsgi_temp_path {d}/uwsgi;\n"
        f"    scgi_temp_path {d}/scgi;\n"
        f"{extra_http}"
        f"    include {site};\n"
        "}\n"
    )
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    print(path)


def find_module(name):
    for d in ["/usr/lib/nginx/modules", "/usr/share/nginx/modules",
              "/usr/lib64/nginx/modules", "/etc/nginx/modules"]:
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    sys.exit(f"render_nginx: nginx module {name} not found (scripts/install-deps.sh installs it)")


if __name__ == "__main__":
    main()
