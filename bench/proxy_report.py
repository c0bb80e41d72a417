#!/usr/bin/env python3
"""Summarises bench/proxy.sh's runs: per row and concurrency the median of the repetitions
with their spread (min-max), ratios taken within each repetition (same minute, same machine
load), and server CPU per request split by process.

usage: proxy_report.py <proxy-runs.csv> <out dir> <quick> <duration> <repeats> <body bytes>
Writes <out>/proxy-summary.csv and <out>/proxy-summary.md and prints the markdown.
"""
import csv
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone

LABELS = {
    "p0_backend": "(p0) backend alone (floor + small body)",
    "p1_nginx_proxy": "(p1) nginx `proxy_pass` → backend, keepalive",
    "p2_outpost_proxy": "(p2) ak-outpost proxy mode → backend, valid session",
    "p3_nginx_auth_request": "(p3) nginx `auth_request` → ak-outpost, `proxy_pass` → backend",
    "b_auth_nginx": "(b) ak-outpost `/auth/nginx` alone, valid session",
    "p2_baseline_proxy": "(p2′) BASELINE_BIN in proxy mode (before)",
}
# Which processes serve each row (their CPU is the row's server CPU).
PROCS = {
    "p0_backend": ["backend"],
    "p1_nginx_proxy": ["nginx_p1", "backend"],
    "p2_outpost_proxy": ["outpost", "backend"],
    "p3_nginx_auth_request": ["nginx_p3", "outpost", "backend"],
    "b_auth_nginx": ["outpost"],
    "p2_baseline_proxy": ["baseline", "backend"],
}
TICKS = {"nginx_p1": "ticks_nginx_p1", "nginx_p3": "ticks_nginx_p3",
         "outpost": "ticks_outpost", "backend": "ticks_backend",
         "baseline": "ticks_baseline"}


def cpu_us(r, proc):
    return int(r[TICKS[proc]]) / int(r["clk_tck"]) * 1e6 / max(int(r["requests"]), 1)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt):
    if len(xs) < 2:
        return fmt(xs[0]) if xs else "–"
    return f"{fmt(med(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"


def k(x):
    return f"{x / 1000:.1f}k"


def ms(x):
    return f"{x / 1000:.2f}"


def f2(x):
    return f"{x:.2f}"


def f1(x):
    return f"{x:.1f}"


def facts():
    try:
        commit = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "log", "-1",
                                 "--format=%h"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "status",
                                "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " (+ uncommitted changes)"
    except OSError:
        commit = "?"
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return now, commit, load


def main():
    path, out, quick, duration, repeats, body = sys.argv[1:7]
    rows = list(csv.DictReader(open(path)))
    by = defaultdict(list)  # (target, c) -> runs
    for r in rows:
        if int(r["non_2xx"]) or int(r["socket_errors"]):
            sys.exit(f"proxy_report: {r['target']} c={r['concurrency']} rep {r['rep']}: "
                     f"{r['non_2xx']} non-2xx, {r['socket_errors']} socket errors")
        by[(r["target"], int(r["concurrency"]))].append(r)
    conc = sorted({c for _, c in by})
    targets = [t for t in LABELS if any((t, c) in by for c in conc)]
    rep_of = {}
    for r in rows:
        rep_of[(r["rep"], r["target"], int(r["concurrency"]))] = r

    def ratio(a, b, c):
        xs = []
        for rep in sorted({r["rep"] for r in rows}):
            ra, rb = rep_of.get((rep, a, c)), rep_of.get((rep, b, c))
            if ra and rb:
                xs.append(float(ra["rps"]) / float(rb["rps"]))
        return xs

    def per_rep_cpu(t, c, procs):
        return [sum(cpu_us(r, p) for p in procs) for r in by[(t, c)]]

    # CSV summary
    with open(os.path.join(out, "proxy-summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["target", "concurrency", "runs", "rps_median", "rps_min", "rps_max", "p50_us_median",
                    "p99_us_median", "p99_us_max", "server_cpu_us_per_req_median",
                    "outpost_cpu_us_per_req_median", "nginx_cpu_us_per_req_median",
                    "backend_cpu_us_per_req_median", "x_p1_median", "x_p1_min", "x_p1_max"])
        for t in targets:
            for c in conc:
                rs = by.get((t, c), [])
                if not rs:
                    continue
                rps = [float(r["rps"]) for r in rs]
                x = ratio(t, "p1_nginx_proxy", c)
                nginx = [p for p in PROCS[t] if p.startswith("nginx")]
                w.writerow([t, c, len(rs), f"{med(rps):.0f}", f"{min(rps):.0f}", f"{max(rps):.0f}",
                            f"{med([float(r['p50_us']) for r in rs]):.0f}",
                            f"{med([float(r['p99_us']) for r in rs]):.0f}",
                            f"{max(float(r['p99_us']) for r in rs):.0f}",
                            f"{med(per_rep_cpu(t, c, PROCS[t])):.2f}",
                            f"{med(per_rep_cpu(t, c, [PROCS[t][0] if t == 'p2_baseline_proxy' else 'outpost'])):.2f}"
                            if "outpost" in PROCS[t] or t == "p2_baseline_proxy" else "",
                            f"{med(per_rep_cpu(t, c, nginx)):.2f}" if nginx else "",
                            f"{med(per_rep_cpu(t, c, ['backend'])):.2f}" if "backend" in PROCS[t] else "",
                            f"{med(x):.3f}" if x else "", f"{min(x):.3f}" if x else "",
                            f"{max(x):.3f}" if x else ""])

    now, commit, load = facts()
    L = []
    L.append(f"Run: {now}, commit {commit}, {repeats} runs of {duration} per point, interleaved "
             f"(repetition → concurrency → row, row order rotated per repetition){' (QUICK)' if quick == '1' else ''}; "
             f"backend body {body} bytes; load average at the end {load}. "
             f"Machine: {os.cpu_count()} cores, kernel {platform.release()}.")
    L.append("")
    L.append("Median of the runs, (min–max) over the runs.")
    L.append("")
    hdr = "| target | " + " | ".join(f"req/s c={c}" for c in conc) + \
          " | p50 ms c=" + " / ".join(map(str, conc)) + " | p99 ms c=" + " / ".join(map(str, conc)) + \
          " | server CPU µs/req c=" + " / ".join(map(str, conc)) + " |"
    L.append(hdr)
    L.append("|---|" + "---:|" * len(conc) + "---|---|---|")
    for t in targets:
        cells = []
        for c in conc:
            rs = by.get((t, c), [])
            cells.append(spread([float(r["rps"]) for r in rs], k))
        p50 = " / ".join(ms(med([float(r["p50_us"]) for r in by[(t, c)]])) for c in conc)
        p99 = " / ".join(ms(med([float(r["p99_us"]) for r in by[(t, c)]])) for c in conc)
        cpu = " / ".join(f1(med(per_rep_cpu(t, c, PROCS[t]))) for c in conc)
        L.append(f"| {LABELS[t]} | " + " | ".join(cells) + f" | {p50} | {p99} | {cpu} |")
    L.append("")
    L.append("Ratios of req/s, each taken within one repetition (the two runs minutes apart at most), "
             "median (min–max):")
    L.append("")
    L.append("| ratio | " + " | ".join(f"c={c}" for c in conc) + " |")
    L.append("|---|" + "---:|" * len(conc))
    for a, b, label in [("p2_outpost_proxy", "p1_nginx_proxy", "**(p2) ak-outpost proxy ÷ (p1) nginx proxy_pass**"),
                        ("p3_nginx_auth_request", "p1_nginx_proxy", "(p3) nginx auth_request + outpost ÷ (p1)"),
                        ("p2_outpost_proxy", "p3_nginx_auth_request", "(p2) ÷ (p3)"),
                        ("p1_nginx_proxy", "p0_backend", "(p1) ÷ (p0) backend alone"),
                        ("p2_outpost_proxy", "b_auth_nginx", "(p2) ÷ (b) the check alone"),
                        ("p2_baseline_proxy", "p1_nginx_proxy", "(p2′) the baseline build ÷ (p1)"),
                        ("p2_outpost_proxy", "p2_baseline_proxy", "(p2) this build ÷ (p2′) the baseline build")]:
        if not all((a, c) in by and (b, c) in by for c in conc):
            continue
        L.append(f"| {label} | " + " | ".join(spread(ratio(a, b, c), f2) for c in conc) + " |")
    L.append("")
    L.append("Server CPU per request (µs, user + system from `/proc/<pid>/stat`, median over the runs) by process:")
    L.append("")
    L.append("| row | process | " + " | ".join(f"c={c}" for c in conc) + " |")
    L.append("|---|---|" + "---:|" * len(conc))
    for t in targets:
        for p in PROCS[t]:
            name = {"nginx_p1": "nginx", "nginx_p3": "nginx", "outpost": "ak-outpost", "backend": "backend",
                    "baseline": "ak-outpost (baseline build)"}[p]
            short = {"p2_baseline_proxy": "p2′"}.get(t, t.split("_")[0])
            L.append(f"| {short} | {name} | " + " | ".join(f1(med(per_rep_cpu(t, c, [p]))) for c in conc) + " |")
    if all(("p2_outpost_proxy", c) in by and ("b_auth_nginx", c) in by for c in conc):
        def beyond(c):
            reps = sorted({r["rep"] for r in rows})
            xs = []
            for rep in reps:
                r2, rb = rep_of.get((rep, "p2_outpost_proxy", c)), rep_of.get((rep, "b_auth_nginx", c))
                if r2 and rb:
                    xs.append(cpu_us(r2, "outpost") - cpu_us(rb, "outpost"))
            return xs
        L.append(f"| p2 − b | ak-outpost: proxying beyond the check | " +
                 " | ".join(spread(beyond(c), f1) for c in conc) + " |")
        if all(("p2_baseline_proxy", c) in by for c in conc):
            def beyond_base(c):
                xs = []
                for rep in sorted({r["rep"] for r in rows}):
                    r2, rb = rep_of.get((rep, "p2_baseline_proxy", c)), rep_of.get((rep, "b_auth_nginx", c))
                    if r2 and rb:
                        xs.append(cpu_us(r2, "baseline") - cpu_us(rb, "outpost"))
                return xs
            L.append(f"| p2′ − b | baseline build: proxying beyond the check | " +
                     " | ".join(spread(beyond_base(c), f1) for c in conc) + " |")
    if all(("p1_nginx_proxy", c) in by for c in conc):
        L.append("| p1 | nginx: proxying (for comparison) | " +
                 " | ".join(f1(med(per_rep_cpu("p1_nginx_proxy", c, ["nginx_p1"]))) for c in conc) + " |")
    md = "\n".join(L) + "\n"
    with open(os.path.join(out, "proxy-summary.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
