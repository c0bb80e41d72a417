#!/usr/bin/env python3
"""Bookkeeping for bench/run.sh (standard library only).

  report.py row <runs.csv> <target> <setup> <concurrency> <duration> '<BENCH json>' ['<CPU ns per process>']
  report.py check-warmup <target> <expected status> '<BENCH json>'
  report.py check-fill <fill.json> <expected count>
  report.py micro <criterion dir> <micro.csv>
  report.py report <results dir> <quick 0|1> <duration>
  report.py update-doc <summary.md> <BENCHMARKS.md>

`report` prints the table, writes summary.csv (with ratios to the floor from the same run),
summary.md and plot.svg.
"""
import csv
import datetime
import json
import math
import os
import platform
import subprocess
import sys

CONC = [1, 16, 64]

LABELS = {
    "a_floor": "(a) floor: minimal hyper server, 5 headers",
    "a2_floor_same_response": "(a′) floor answering (b)'s exact response headers",
    "b_cookie_cached": "(b) /auth/nginx, valid cookie, introspection cached",
    "c_no_cookie": "(c) /auth/nginx, no cookie (401)",
    "d_bearer_hit": "(d) Bearer header, cache hit",
    "e_bearer_miss": "(e) Bearer header, cache miss (IdP)",
    "f_nginx_keepalive_floor": "(f) browser → nginx → floor, keepalive",
    "f_nginx_keepalive_floor_same": "(f′) browser → nginx → floor with the outpost's exact response, keepalive",
    "f_nginx_keepalive_outpost": "(f) browser → nginx → ak-outpost, keepalive",
    "f_nginx_keepalive_outpost_nojwt": "(f) browser → nginx → ak-outpost, `send_jwt_header: false`, keepalive",
    "f_nginx_nokeepalive_floor": "(f) browser → nginx → floor, no keepalive (SWAG)",
    "f_nginx_nokeepalive_floor_same": "(f′) browser → nginx → floor with the outpost's exact response, no keepalive (SWAG)",
    "f_nginx_nokeepalive_outpost": "(f) browser → nginx → ak-outpost, no keepalive (SWAG)",
    "f_nginx_nokeepalive_outpost_nojwt": "(f) browser → nginx → ak-outpost, `send_jwt_header: false`, no keepalive (SWAG)",
    "n_nginx_subrequest": "(n) nginx's auth sub-request for a browser's page request (18 headers, 2.5 KB), valid cookie",
    "n2_floor_nginx_subrequest": "(n′) floor answering (n) with the outpost's exact response headers",
    "n_nginx_subrequest_close": "(n) on a new connection per check (SWAG's config, no upstream keepalive)",
    "n2_floor_nginx_subrequest_close": "(n′) on a new connection per check",
}
# Which run each target is compared with.
BASELINE = {
    "b_cookie_cached": "a_floor",
    "c_no_cookie": "a_floor",
    "d_bearer_hit": "a_floor",
    "e_bearer_miss": "a_floor",
    "f_nginx_keepalive_floor_same": "f_nginx_keepalive_floor",
    "f_nginx_keepalive_outpost": "f_nginx_keepalive_floor",
    "f_nginx_keepalive_outpost_nojwt": "f_nginx_keepalive_floor",
    "f_nginx_nokeepalive_floor_same": "f_nginx_nokeepalive_floor",
    "f_nginx_nokeepalive_outpost": "f_nginx_nokeepalive_floor",
    "f_nginx_nokeepalive_outpost_nojwt": "f_nginx_nokeepalive_floor",
}
COLORS = {
    "a_floor": "#444444",
    "a2_floor_same_response": "#777777",
    "b_cookie_cached": "#1f77b4",
    "c_no_cookie": "#2ca02c",
    "d_bearer_hit": "#9467bd",
    "e_bearer_miss": "#d62728",
    "f_nginx_keepalive_floor": "#8c8c8c",
    "f_nginx_keepalive_outpost": "#ff7f0e",
    "f_nginx_nokeepalive_floor": "#b5b5b5",
    "f_nginx_nokeepalive_outpost": "#e377c2",
    "f_nginx_keepalive_floor_same": "#a0a0a0",
    "f_nginx_keepalive_outpost_nojwt": "#bcbd22",
    "f_nginx_nokeepalive_floor_same": "#d0d0d0",
    "f_nginx_nokeepalive_outpost_nojwt": "#17becf",
}
DASHED = {"a_floor", "a2_floor_same_response", "f_nginx_keepalive_floor", "f_nginx_nokeepalive_floor",
          "f_nginx_keepalive_floor_same", "f_nginx_nokeepalive_floor_same"}


def cmd_row(path, target, setup, conc, duration, line, cpu_ns="0"):
    """`cpu_ns`: time on the CPU (ns) of each server process during the run, space-separated
    (for (f): nginx, the auth server, the app)."""
    r = json.loads(line)
    parts = [int(t) / 1e3 / r["requests"] if r["requests"] else 0 for t in cpu_ns.split()]
    cpu_us = sum(parts)
    expect_401 = target == "c_no_cookie"
    non2xx = r["err_status"]
    socket = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    if socket:
        print(f"[bench] warning: {target} c={conc}: {socket} socket errors", file=sys.stderr)
    if non2xx and not expect_401:
        print(f"[bench] warning: {target} c={conc}: {non2xx} non-2xx answers", file=sys.stderr)
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow([target, setup, conc, f"{r['rps']:.1f}", r["p50_us"], r["p90_us"],
                                r["p99_us"], r["max_us"], r["requests"], non2xx, socket,
                                r["token_wraps"], duration, f"{cpu_us:.2f}",
                                " ".join(f"{x:.2f}" for x in parts)])
    print(f"[bench]   {r['rps']:>10.0f} req/s  p50 {r['p50_us'] / 1000:.3f} ms  "
          f"p99 {r['p99_us'] / 1000:.3f} ms  server CPU {cpu_us:.1f} µs/req", file=sys.stderr)


def cmd_check_warmup(target, want, line):
    if not line:
        sys.exit(f"[bench] {target}: the warm-up produced no result")
    r = json.loads(line)
    socket = r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]
    ok = r["requests"] > 0 and socket == 0
    if want == "200":
        ok = ok and r["err_status"] == 0
    else:
        ok = ok and r["err_status"] == r["requests"]
    if not ok:
        sys.exit(f"[bench] {target}: warm-up check failed (want all {want}): {line}")


def cmd_check_fill(path, want):
    r = json.load(open(path))
    got = r["status"].get("200", 0)
    if got != int(want):
        sys.exit(f"[bench] fill: only {got} of {want} sessions were accepted: {r}")


def cmd_micro(crit_dir, out):
    rows = []
    for dirpath, _, files in os.walk(crit_dir):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            meta = json.load(open(os.path.join(dirpath, "benchmark.json")))
            est = json.load(open(os.path.join(dirpath, "estimates.json")))
        except (OSError, ValueError):
            continue
        name = meta.get("full_id") or meta.get("title")
        rows.append((name, est["median"]["point_estimate"], est["mean"]["point_estimate"],
                     est["median"]["confidence_interval"]["lower_bound"],
                     est["median"]["confidence_interval"]["upper_bound"]))
    rows.sort()
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["benchmark", "median_ns", "mean_ns", "median_ci_low_ns", "median_ci_high_ns"])
        for r in rows:
            w.writerow([r[0]] + [f"{x:.1f}" for x in r[1:]])
    for r in rows:
        print(f"[bench]   {r[0]:<45} {fmt_ns(r[1])}", file=sys.stderr)


def fmt_ns(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"


def load_runs(out):
    """The run of each (target, concurrency); of several (the nginx rows run in two rounds),
    the fastest."""
    runs = {}
    with open(os.path.join(out, "runs.csv")) as f:
        for r in csv.DictReader(f):
            key = (r["target"], int(r["concurrency"]))
            if key not in runs or float(r["rps"]) > float(runs[key]["rps"]):
                runs[key] = r
    return runs


def load_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def machine():
    model = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {
        "cores": sh("nproc"),
        "cpu": model,
        "kernel": sh("uname -r"),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "wrk": sh("wrk -v 2>&1 | head -1"),
        "nginx": sh("nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1"),
        "rustc": sh("rustc --version"),
        "commit": sh(f"git -C {root} rev-parse --short HEAD") + (
            " (+ uncommitted changes)" if sh(f"git -C {root} status --porcelain -- src Cargo.toml") else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load": sh("cut -d' ' -f1-3 /proc/loadavg"),
    }


def run_facts(out):
    """machine() as recorded when the measurements ended (run.json), else as of now."""
    m = machine()
    try:
        m.update(json.load(open(os.path.join(out, "run.json"))))
    except (OSError, ValueError):
        pass
    return m


def ratio(runs, target, c):
    base = BASELINE.get(target)
    if not base or (target, c) not in runs or (base, c) not in runs:
        return None
    return float(runs[(target, c)]["rps"]) / float(runs[(base, c)]["rps"])


def verdicts(runs, mem):
    out = []

    def rps(t, c):
        return float(runs[(t, c)]["rps"]) if (t, c) in runs else None

    def p99(t, c):
        return int(runs[(t, c)]["p99_us"]) / 1000 if (t, c) in runs else None

    r = ratio(runs, "b_cookie_cached", 64)
    p = p99("b_cookie_cached", 64)
    if r is not None:
        out.append(("(b) ≥ 0.85× floor req/s at c=64", f"{r:.2f}×", r >= 0.85))
        out.append(("(b) p99 ≤ 1 ms at c=64", f"{p:.2f} ms", p <= 1.0))
        fp = p99("a_floor", 64)
        if fp is not None:
            out.append(("(b) p99 at c=64 against the floor's p99 (no target)", f"{p / fp:.2f}× ({fp:.2f} ms)", None))
        if rps("a2_floor_same_response", 64):
            r2 = rps("b_cookie_cached", 64) / rps("a2_floor_same_response", 64)
            out.append(("(b) against (a′), a floor sending the same response bytes, c=64 (no target)", f"{r2:.2f}×", None))
    for ka, name in [("keepalive", "keepalive"), ("nokeepalive", "no keepalive")]:
        t = f"f_nginx_{ka}_outpost"
        rs = [ratio(runs, t, c) for c in CONC]
        if all(x is not None for x in rs):
            worst = min(rs)
            out.append((f"(f) ≥ 0.9× browser → nginx → floor, {name} (worst of c=1/16/64)", f"{worst:.2f}×", worst >= 0.9))
        same = f"f_nginx_{ka}_floor_same"
        rs = [rps(t, c) / rps(same, c) for c in CONC if rps(t, c) and rps(same, c)]
        if len(rs) == len(CONC):
            out.append((f"(f) against (f′), nginx → floor with the outpost's exact bytes, {name} (worst; no target)", f"{min(rs):.2f}×", None))
        rs = [ratio(runs, t + "_nojwt", c) for c in CONC]
        if all(x is not None for x in rs):
            out.append((f"(f) `send_jwt_header: false` against the floor, {name} (worst; no target)", f"{min(rs):.2f}×", None))
    b = [rps("b_cookie_cached", c) for c in CONC]
    cc = [rps("c_no_cookie", c) for c in CONC]
    if all(b) and all(cc):
        worst = min(x / y for x, y in zip(cc, b))
        out.append(("(c) at least as fast as (b) (worst of c=1/16/64)", f"{worst:.2f}× (b)", worst >= 1.0))
    m = {r["what"]: r for r in mem}
    if "outpost_rss_first_checks" in m:
        v = int(m["outpost_rss_first_checks"]["value"]) / 1024
        out.append(("idle RSS after the first checks ≤ 5 MiB", f"{v:.1f} MiB", v <= 5))
    for k in ["outpost_hwm_valid_load"]:
        if k in m:
            v = int(m[k]["value"]) / 1024
            out.append(("RSS under valid-session load ≤ 8 MiB (VmHWM after (b)–(d))", f"{v:.1f} MiB", v <= 8))
            break
    if "outpost_rss_sessions" in m:
        v = int(m["outpost_rss_sessions"]["value"]) / 1024
        n = int(m["sessions"]["value"]) if "sessions" in m else 0
        if n >= 100000:
            out.append((f"{n:,} cached sessions ≤ 48 MiB", f"{v:.1f} MiB", v <= 48))
        else:
            out.append((f"100,000 cached sessions ≤ 48 MiB (smoke run: {n:,} only)", f"{v:.1f} MiB", None))
    if "startup_median" in m:
        v = float(m["startup_median"]["value"])
        out.append(("ready (first 204 on /ping) ≤ 50 ms", f"{v:.1f} ms (median)", v <= 50))
    return out


def cpu_split(runs, t, c):
    """[nginx, auth server, app] µs per request of a (f) run, or None."""
    r = runs.get((t, c))
    parts = (r or {}).get("server_cpu_split_us") or ""
    xs = [float(x) for x in parts.split()]
    return xs if len(xs) == 3 else None


def nginx_split_rows(runs, targets):
    rows = []
    for t in targets:
        if not t.startswith("f_"):
            continue
        splits = {c: cpu_split(runs, t, c) for c in (16, 64)}
        if not all(splits.values()):
            continue
        cells = [" / ".join(f"{splits[c][i]:.1f}" for c in (16, 64)) for i in range(3)]
        cells.append(" / ".join(f"{sum(splits[c]):.1f}" for c in (16, 64)))
        base = BASELINE.get(t)
        bs = {c: cpu_split(runs, base, c) for c in (16, 64)} if base else {}
        if base and all(bs.values()):
            cells.append(" / ".join(f"{sum(bs[c]) / sum(splits[c]):.2f}" for c in (16, 64)))
        else:
            cells.append("baseline")
        rows.append([LABELS[t]] + cells)
    return rows


def md_table(md, head, align, rows):
    """Appends a Markdown table (nothing when there are no rows) and a blank line."""
    if not rows:
        return
    md.append("| " + " | ".join(head) + " |")
    md.append("|" + "|".join(align) + "|")
    md.extend("| " + " | ".join(row) + " |" for row in rows)
    md.append("")


def cmd_report(out, quick, duration):
    runs = load_runs(out)
    mem = load_csv(os.path.join(out, "memory.csv"))
    micro = load_csv(os.path.join(out, "micro.csv"))
    targets = [t for t in LABELS if any((t, c) in runs for c in CONC)]

    with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "description", "concurrency", "rps", "p50_ms", "p99_ms",
                    "ratio_to_baseline", "baseline", "server_cpu_us_per_req", "non_2xx", "socket_errors"])
        for t in targets:
            for c in CONC:
                r = runs.get((t, c))
                if not r:
                    continue
                x = ratio(runs, t, c)
                w.writerow([t, LABELS[t], c, r["rps"], f"{int(r['p50_us']) / 1000:.3f}",
                            f"{int(r['p99_us']) / 1000:.3f}", "" if x is None else f"{x:.3f}",
                            BASELINE.get(t, ""), r.get("server_cpu_us_per_req", ""), r["non_2xx"], r["socket_errors"]])

    m = run_facts(out)
    md = []
    md.append(f"Run: {m['date']}, commit {m['commit']}, "
              f"{'QUICK smoke run, ' if quick == '1' else ''}{duration} per point (the faster of 2 runs of half that; (e) one run), "
              f"load average at the end {m['load']}.\n")
    md.append(f"Machine: {m['cores']} cores, {m['cpu']}, kernel {m['kernel']}, {m['os']}; "
              f"{m['rustc']}; {m['wrk']}; {m['nginx']}.\n")
    md.append("| target | req/s c=1 | req/s c=16 | req/s c=64 | p50 ms c=1 / 16 / 64 | p99 ms c=1 / 16 / 64 | × baseline c=1 / 16 / 64 | server CPU µs/req c=1 / 16 / 64 |")
    md.append("|---|---:|---:|---:|---|---|---|---|")
    for t in targets:
        cells = []
        for c in CONC:
            r = runs.get((t, c))
            cells.append(f"{float(r['rps']):,.0f}" if r else "–")
        p50 = " / ".join(f"{int(runs[(t, c)]['p50_us']) / 1000:.2f}" if (t, c) in runs else "–" for c in CONC)
        p99 = " / ".join(f"{int(runs[(t, c)]['p99_us']) / 1000:.2f}" if (t, c) in runs else "–" for c in CONC)
        rs = [ratio(runs, t, c) for c in CONC]
        rtxt = " / ".join("–" if x is None else f"{x:.2f}" for x in rs) if t in BASELINE else "baseline"
        cpu = " / ".join(f"{float(runs[(t, c)].get('server_cpu_us_per_req') or 0):.1f}" if (t, c) in runs else "–" for c in CONC)
        md.append(f"| {LABELS[t]} | {' | '.join(cells)} | {p50} | {p99} | {rtxt} | {cpu} |")
    md.append("")
    md.append("Ratios: (b)–(e) against (a) the floor; (f) and (f′) against the floor behind the same nginx config, "
              "all of them sent a browser's page request (`bench/browser.sh`). "
              "Server CPU: time on the CPU of the server processes during the run (the scheduler's count; for (f): nginx, the outpost or floor, "
              "and the app) divided by the requests wrk completed; it does not depend on whether wrk or the server was the bottleneck.")
    split = nginx_split_rows(runs, targets)
    if split:
        md.append("")
        md.append("Where the CPU of a request behind nginx goes (µs per request, c=16 / c=64, the same runs "
                  "as above): nginx (the auth sub-request, then the request to the app), the auth server "
                  "(the outpost or the floor), the app (a floor that receives the identity headers nginx "
                  "copies from the answer); × baseline compares the totals.\n")
        md_table(md, ["target", "nginx", "auth server", "app", "total", "× baseline by CPU"],
                 ["---", "---:", "---:", "---:", "---:", "---:"], split)
    warn = [(t, c, r) for (t, c), r in runs.items()
            if int(r["socket_errors"]) or (int(r["non_2xx"]) and t != "c_no_cookie") or int(r["token_wraps"])]
    for t, c, r in sorted(warn):
        md.append(f"\n⚠ {t} c={c}: {r['socket_errors']} socket errors, {r['non_2xx']} non-2xx, "
                  f"{r['token_wraps']} token-list wraps.")
    md.append("")
    def mem_value(r):
        if r["unit"] == "KiB":
            return f"{int(r['value']) / 1024:.1f} MiB"
        if r["unit"] == "ms":
            return f"{float(r['value']):.1f} ms"
        return f"{int(r['value']):,}"

    md_table(md, ["memory / start-up", "value", "note"], ["---", "---:", "---"],
             [[r["what"], mem_value(r), r["note"]] for r in mem])
    cg = load_csv(os.path.join(out, "callgrind.csv"))
    cg_rows = [[LABELS.get(r["target"], r["target"]), f"{int(r['instructions_per_request']):,}", f"{int(r['requests']):,}"]
               for r in cg]
    by_target = {r["target"]: int(r["instructions_per_request"]) for r in cg}
    if "b_cookie_cached" in by_target and "a2_floor_same_response" in by_target:
        own = by_target["b_cookie_cached"] - by_target["a2_floor_same_response"]
        cg_rows.append(["(b) minus (a′): the outpost's own work per check", f"{own:,}", "–"])
    if "n_nginx_subrequest" in by_target and "n2_floor_nginx_subrequest" in by_target:
        own = by_target["n_nginx_subrequest"] - by_target["n2_floor_nginx_subrequest"]
        cg_rows.append(["(n) minus (n′): the outpost's own work on nginx's sub-request", f"{own:,}", "–"])
    if "n_nginx_subrequest_close" in by_target and "n2_floor_nginx_subrequest_close" in by_target:
        own = by_target["n_nginx_subrequest_close"] - by_target["n2_floor_nginx_subrequest_close"]
        cg_rows.append(["the same on a new connection per check", f"{own:,}", "–"])
    md_table(md, ["instructions per request (callgrind, `bench/callgrind.sh`; machine load does not move these)",
                  "count", "requests counted"], ["---", "---:", "---:"], cg_rows)
    md_table(md, ["micro-benchmark (criterion, `benches/auth_path.rs`)", "median"], ["---", "---:"],
             [[f"`{r['benchmark']}`", fmt_ns(float(r["median_ns"]))] for r in micro])
    md_table(md, ["target (issue)", "measured", "met"], ["---", "---:", ":-:"],
             [[name, val, "–" if ok is None else ("yes" if ok else "**no**")] for name, val, ok in verdicts(runs, mem)])
    md.append("![throughput and p99 against concurrency](bench/results/plot.svg)")
    text = "\n".join(md) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    write_svg(os.path.join(out, "plot.svg"), runs, targets, m)
    print(text)


# ---------------------------------------------------------------------------------------------
# SVG plot, by hand: two log-log panels (req/s and p99 against concurrency).

def nice_ticks(lo, hi):
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo / 1.0001 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def fmt_tick(v, unit):
    if unit == "rps":
        return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"
    return f"{v:g}"


def write_svg(path, runs, targets, m):
    W, H = 1100, 560
    pw, ph = 430, 330
    panels = [(70, 60, "rps", "requests/s (log)"), (600, 60, "p99", "p99 latency, ms (log)")]
    xs = {c: i for i, c in enumerate(CONC)}
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16">ak-outpost benchmarks: '
           f'throughput and p99 against concurrency</text>',
           f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">{esc(m["cpu"])}, {m["cores"]} cores, '
           f'kernel {esc(m["kernel"])}, {esc(m["date"])}; wrk 1 thread on core 0, servers on core 1</text>']
    for (x0, y0, key, title) in panels:
        vals = []
        for t in targets:
            for c in CONC:
                r = runs.get((t, c))
                if r:
                    vals.append(float(r["rps"]) if key == "rps" else int(r["p99_us"]) / 1000)
        vals = [v for v in vals if v > 0]
        if not vals:
            continue
        lo = 10 ** math.floor(math.log10(min(vals)))
        hi = 10 ** math.ceil(math.log10(max(vals)))
        if key == "p99":
            lo = min(lo, 0.1)

        def X(c):
            return x0 + 30 + xs[c] * (pw - 60) / (len(CONC) - 1)

        def Y(v):
            return y0 + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph

        svg.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        svg.append(f'<text x="{x0 + pw / 2}" y="{y0 - 6}" text-anchor="middle" font-weight="bold">{title}</text>')
        for v in nice_ticks(lo, hi):
            y = Y(v)
            svg.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            svg.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#333">{fmt_tick(v, key)}</text>')
        for c in CONC:
            svg.append(f'<text x="{X(c):.1f}" y="{y0 + ph + 18}" text-anchor="middle">{c}</text>')
        svg.append(f'<text x="{x0 + pw / 2}" y="{y0 + ph + 36}" text-anchor="middle" fill="#333">'
                   'concurrent connections</text>')
        # Targets from the issue, drawn where they apply.
        if key == "p99":
            y = Y(1.0)
            svg.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#1f77b4" '
                       'stroke-dasharray="2,4"/>')
            svg.append(f'<text x="{x0 + pw - 4}" y="{y - 4:.1f}" text-anchor="end" fill="#1f77b4">'
                       '(b) target p99 ≤ 1 ms at c=64</text>')
        elif ("a_floor", 64) in runs:
            v = 0.85 * float(runs[("a_floor", 64)]["rps"])
            y = Y(v)
            xc = X(64)
            svg.append(f'<line x1="{xc - 25:.1f}" x2="{xc + 25:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#1f77b4" '
                       'stroke-width="2" stroke-dasharray="3,2"/>')
            svg.append(f'<text x="{xc + 25:.1f}" y="{y + 15:.1f}" text-anchor="end" fill="#1f77b4">'
                       '(b) target: 0.85× floor at c=64</text>')
        for t in targets:
            pts = []
            for c in CONC:
                r = runs.get((t, c))
                if not r:
                    continue
                v = float(r["rps"]) if key == "rps" else int(r["p99_us"]) / 1000
                if v > 0:
                    pts.append((X(c), Y(v)))
            if not pts:
                continue
            dash = ' stroke-dasharray="6,4"' if t in DASHED else ""
            svg.append(f'<polyline fill="none" stroke="{COLORS[t]}" stroke-width="2"{dash} points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            for x, y in pts:
                svg.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[t]}"/>')
    # legend
    lx, ly = 70, 450
    rows = (len(targets) + 1) // 2
    for i, t in enumerate(targets):
        x = lx + (i // rows) * 530
        y = ly + (i % rows) * 18
        dash = ' stroke-dasharray="6,4"' if t in DASHED else ""
        svg.append(f'<line x1="{x}" x2="{x + 28}" y1="{y}" y2="{y}" stroke="{COLORS[t]}" stroke-width="2"{dash}/>')
        svg.append(f'<text x="{x + 34}" y="{y + 4}">{esc(LABELS[t])}</text>')
    svg.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


BEGIN = "<!-- bench:begin (generated by bench/run.sh; edits here are overwritten) -->"
END = "<!-- bench:end -->"


def cmd_update_doc(summary, doc):
    text = open(summary).read()
    cur = open(doc).read() if os.path.exists(doc) else ""
    if BEGIN in cur and END in cur:
        head, rest = cur.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{BEGIN}\n{text}{END}{tail}"
    else:
        new = cur + f"\n{BEGIN}\n{text}{END}\n"
    with open(doc, "w") as f:
        f.write(new)
    print(f"[bench] updated {doc}", file=sys.stderr)


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd, rest = a[0], a[1:]
    {
        "row": lambda: cmd_row(*rest),
        "check-warmup": lambda: cmd_check_warmup(*rest),
        "check-fill": lambda: cmd_check_fill(*rest),
        "micro": lambda: cmd_micro(*rest),
        "report": lambda: cmd_report(*rest),
        "facts": lambda: open(os.path.join(rest[0], "run.json"), "w").write(json.dumps(
            {k: v for k, v in machine().items() if k in ("date", "load", "commit")}) + "\n"),
        "update-doc": lambda: cmd_update_doc(*rest),
    }[cmd]()


if __name__ == "__main__":
    main()
