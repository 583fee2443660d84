#!/usr/bin/env python3
"""The numbers side of bench/run.sh.

  report.py h2pct LOGFILE             p50 and p99 (ms) and the non-2xx count of an h2load
                                      --log-file (start_us, status, duration_us per line)
  report.py rate RUN_TSV TEST SHARE CONNS
                                      the fixed request rate for TEST's same-load runs: SHARE of
                                      the slowest gateway's median req/s, as "TOTAL PER_CONN"
                                      (whole requests per second on each of CONNS connections)
  report.py render RUN_TSV MEM_TSV META OUT_MD
                                      the results tables, written to OUT_MD and printed

RUN_TSV columns: test gateway round rps p50_ms p99_ms requests cpu_s errors log_lines
                 upstream_cpu_s machine_busy_pct tcp_connections_opened (machine-wide, so
                 other work on the box shows in it too: kept in the raw file only)
                 system_cpu_s (the kernel's part of cpu_s) load_tool_cpu_s (wrk's, h2load's or the
                 openssl clients' user + system CPU; both absent from files written before them)
                 steal_pct (the share of the machine's CPU time the hypervisor took during the
                 run, from /proc/stat; absent from files written before 2026-12-07 09:40)
                 migrations switches (how often the kernel moved one of the gateway's threads
                 to another CPU, and switched one out, during the run; "na" where /proc has no
                 sched files; absent from files written before 2026-12-07 10:30)
                 (for the handshake test: rps = handshakes/s, p50_ms = the mean handshake time,
                 requests = handshakes)
MEM_TSV columns: gateway phase rss_kb pss_kb conns
META: KEY<TAB>VALUE lines (machine, tools, settings, load average).
"""
import statistics
import sys

GATEWAYS = [("full", "Palisade, full policy"), ("nginx", "nginx, same policy"),
            ("pass", "Palisade, passthrough"), ("bare", "bare Pingora (the floor)")]
# Gateways that write no access log: their log-lines column says n/a.
NO_ACCESS_LOG = {"bare"}


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def h2pct(path):
    durations, bad = [], 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            status, dur = int(parts[1]), int(parts[2])
            if not 200 <= status < 300:
                bad += 1
            durations.append(dur / 1000.0)
    durations.sort()
    print(f"{percentile(durations, 50):.3f} {percentile(durations, 99):.3f} {bad}")


def rate(run_tsv, test, share, conns):
    by_gw = {}
    for r in read_tsv(run_tsv):
        if r[0] == test:
            by_gw.setdefault(r[1], []).append(float(r[3]))
    slowest = min((statistics.median(v) for v in by_gw.values()), default=0.0)
    per_conn = int(slowest * float(share) / int(conns))
    print(f"{per_conn * int(conns)} {per_conn}")


def by_round(rows, a, b, col=3):
    """The ratio of gateway a's rate (or another column's figure) to gateway b's in each
    round, where both ran a few seconds apart: how far one round's ratio lies from another's
    shows the noise in the medians' ratio."""
    rates = {}
    for r in rows:
        rates.setdefault(r[2], {})[r[1]] = float(r[col])
    ratios = [ratio(g[a], g[b]) for _, g in sorted(rates.items(), key=lambda kv: int(kv[0]))
              if a in g and b in g]
    return " ".join(ratios) if ratios else "n/a"


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def fmt(x, digits=0):
    if x != x:  # NaN
        return "n/a"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if not b or a != a or b != b:
        return "n/a"
    return f"{a / b:.2f}x"


def figure(x):
    """Two decimals, or n/a for a figure the raw file does not have."""
    return "n/a" if x != x else f"{x:.2f}"


def split(a, b):
    """CPU per request A/B divided into user space and kernel, where the raw file has both."""
    if a["sys"] != a["sys"] or b["sys"] != b["sys"]:
        return ""
    return f" (user space {ratio(a['user'], b['user'])}, kernel {ratio(a['sys'], b['sys'])})"


TESTS = {
    "h1": ("HTTP/1.1 keep-alive, plain", "req/s"),
    "h2": ("HTTP/2 over TLS", "req/s"),
    "tls": ("TLS handshakes: a full handshake per connection (no resumption, no request)",
            "handshakes/s"),
    "h1fixed": ("HTTP/1.1 keep-alive, plain, at the same load", "req/s"),
    "h2fixed": ("HTTP/2 over TLS, at the same load", "req/s"),
}


def render(run_tsv, mem_tsv, meta_path, out_md):
    meta = dict(row[:2] for row in read_tsv(meta_path) if len(row) >= 2)
    rows = read_tsv(run_tsv)
    mem = read_tsv(mem_tsv)
    out = []
    w = out.append
    w("# Palisade against nginx: `make bench`")
    w("")
    w(f"Run {meta.get('date', '?')}, git {meta.get('git', '?')}; everything on one machine, over loopback "
      "(the load tools, the upstream and the gateways share its cores).")
    w("")
    w("| machine | |")
    w("| --- | --- |")
    for key in ("cpu", "nproc", "kernel", "memory", "load_start", "load_end", "tools", "palisade",
                "build", "settings", "api_keys"):
        if key in meta:
            w(f"| {key.replace('_', ' ')} | {meta[key]} |")
    w("")
    if meta.get("commands"):
        w(meta["commands"])
        w("")

    summary = {}
    for test, (title, unit) in TESTS.items():
        test_rows = [r for r in rows if r[0] == test]
        if not test_rows:
            continue
        w(f"## {title}")
        w("")
        fixed = test.endswith("fixed")
        cmd = meta.get("cmd_fixed" if fixed else f"cmd_{test}")
        if cmd:
            w(f"`{cmd}`, {meta.get('rounds', '?')} rounds, gateways alternating.")
            w("")
        if fixed:
            offered = meta.get(f"rate_{test[:2]}", "?")
            share = float(meta.get("rate_share", "nan"))
            w(f"Every gateway offered the same {offered} requests per second ({share:.0%} of the "
              f"slowest gateway's median above), after the saturating runs: latency and CPU compared at "
              f"equal load, where the saturating runs compare capacity.")
            w("")
        tls = test == "tls"
        latency = "mean handshake ms | " if tls else "p50 ms | p99 ms | "
        per = "handshakes" if tls else "requests"
        w(f"| gateway | {unit} (median) | min–max | {latency}CPU s / 100k {per} | of it kernel "
          f"| {'' if tls else 'upstream CPU s / 100k | '}load tool CPU s / 100k | errors "
          f"| {'' if tls else 'access log lines / request | '}machine busy "
          f"| thread moves / switches per 1k {per} |")
        w("| --- | ---: | ---: | " + ("---: | " * (7 if tls else 10)).rstrip())
        for gw, label in GATEWAYS:
            g = [r for r in test_rows if r[1] == gw]
            if not g:
                continue
            rps = [float(r[3]) for r in g]
            p50 = [float(r[4]) for r in g]
            p99 = [float(r[5]) for r in g]
            reqs = sum(int(r[6]) for r in g)
            cpu = sum(float(r[7]) for r in g)
            # The kernel's part, in raw files that have it.
            sys_cpu = sum(float(r[13]) for r in g) if all(len(r) > 13 for r in g) else None
            tool_cpu = sum(float(r[14]) for r in g) if all(len(r) > 14 for r in g) else None
            # The upstream's CPU while this gateway was loaded: what the gateway's way of using
            # its upstream connections costs the upstream, on the same cores.
            up_cpu = sum(float(r[10]) for r in g)
            errors = sum(int(r[8]) for r in g)
            lines = sum(int(r[9]) for r in g)
            busy = statistics.median(float(r[11]) for r in g)
            # The hypervisor's steal, in raw files that have it: the median round's and the most.
            steal = ([float(r[15]) for r in g] if all(len(r) > 15 for r in g) else None)
            steal_cell = (f" (steal {statistics.median(steal):.1f}%, at most {max(steal):.1f}%)"
                          if steal else "")
            # The scheduler's moves and switches of the gateway's threads, where recorded.
            sched = [(r[16], r[17]) for r in g if len(r) > 17 and "na" not in (r[16], r[17])]
            sched_cell = (f"{sum(int(m) for m, _ in sched) / reqs * 1000:.1f} / "
                          f"{sum(int(w) for _, w in sched) / reqs * 1000:.0f}"
                          if reqs and len(sched) == len(g) else "n/a")
            cpu100k = cpu / reqs * 100000 if reqs else float("nan")
            sys100k = (sys_cpu / reqs * 100000 if reqs and sys_cpu is not None
                       else float("nan"))
            tool100k = (tool_cpu / reqs * 100000 if reqs and tool_cpu is not None
                        else float("nan"))
            up_cell = "" if tls else f"{figure(up_cpu / reqs * 100000 if reqs else float('nan'))} | "
            per_req_lines = (f"{lines / reqs:.2f} | " if reqs and gw not in NO_ACCESS_LOG
                             else "n/a | ")
            s = dict(rps=statistics.median(rps), p50=statistics.median(p50),
                     p99=statistics.median(p99), cpu=cpu100k, sys=sys100k,
                     user=cpu100k - sys100k,
                     up=up_cpu / reqs * 100000 if reqs else float("nan"))
            summary[(test, gw)] = s
            lat = f"{s['p50']:.2f}" if tls else f"{s['p50']:.2f} | {s['p99']:.2f}"
            w(f"| {label} | {fmt(s['rps'])} | {fmt(min(rps))}–{fmt(max(rps))} | {lat} "
              f"| {cpu100k:.2f} | {figure(sys100k)} | {up_cell}{figure(tool100k)} | {errors} "
              f"| {'' if tls else per_req_lines}"
              f"{busy:.0f}%{steal_cell} | {sched_cell} |")
        w("")
        full, ngx, pas, bare = (summary.get((test, g)) for g in ("full", "nginx", "pass", "bare"))
        if full and ngx and fixed:
            w(f"- Palisade full / nginx at the same load: p99 **{ratio(full['p99'], ngx['p99'])}** "
              f"(target ≤ 1.00x), p50 {ratio(full['p50'], ngx['p50'])}, CPU per request "
              f"{ratio(full['cpu'], ngx['cpu'])}{split(full, ngx)}; p99 by round "
              f"{by_round(test_rows, 'full', 'nginx', col=5)}")
        if full and pas and fixed:
            w(f"- Palisade full / passthrough at the same load: p99 {ratio(full['p99'], pas['p99'])}, "
              f"CPU per request {ratio(full['cpu'], pas['cpu'])}")
        if fixed:
            w("")
            continue
        if full and ngx:
            p99 = "" if tls else f"p99 {ratio(full['p99'], ngx['p99'])} (at saturation), "
            upstream = "" if tls else f", the upstream's CPU per request {ratio(full['up'], ngx['up'])}"
            w(f"- Palisade full / nginx: {unit} **{ratio(full['rps'], ngx['rps'])}** "
              f"(target ≥ 1.00x), {p99}CPU per {per[:-1]} {ratio(full['cpu'], ngx['cpu'])}"
              f"{split(full, ngx)}{upstream}"
              f"; {unit} by round {by_round(test_rows, 'full', 'nginx')}")
        if full and pas:
            target = "" if tls else " (target ≥ 0.95x)"
            w(f"- Palisade full / passthrough: {unit} **{ratio(full['rps'], pas['rps'])}**"
              f"{target}, CPU per {per[:-1]} {ratio(full['cpu'], pas['cpu'])}; "
              f"{unit} by round {by_round(test_rows, 'full', 'pass')}")
        if bare and ngx:
            w(f"- bare Pingora / nginx (the architecture's floor): {unit} "
              f"{ratio(bare['rps'], ngx['rps'])}, CPU per {per[:-1]} "
              f"{ratio(bare['cpu'], ngx['cpu'])}{split(bare, ngx)}")
        if pas and bare:
            w(f"- Palisade passthrough / bare Pingora: {unit} {ratio(pas['rps'], bare['rps'])}, "
              f"CPU per {per[:-1]} {ratio(pas['cpu'], bare['cpu'])}")
        w("")

    if mem:
        w("## Memory")
        w("")
        conns = meta.get("idle_conns", "?")
        w(f"RSS from /proc/PID/status (VmRSS; nginx: master and workers summed, which counts "
          f"their shared pages once per process), PSS from /proc/PID/smaps_rollup (shared pages "
          f"split between the processes). Idle connections: {conns} HTTP/1.1 keep-alive "
          f"connections to the plain listener, each having served one request, then held idle.")
        w("")
        w(f"| gateway | RSS at start | RSS idle after the load | RSS with {conns} idle conns "
          f"| PSS with {conns} idle conns | conns held | per idle conn |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for gw, label in GATEWAYS:
            m = {r[1]: r for r in mem if r[0] == gw}
            if not m:
                continue

            def mb(phase, col=2):
                r = m.get(phase)
                return int(r[col]) / 1024 if r else float("nan")

            held = int(m["idle"][4]) if "idle" in m else 0
            per = ((mb("idle") - mb("after_load")) * 1024 / held) if held else float("nan")
            summary[("mem", gw)] = dict(start=mb("start"), idle=mb("idle"))
            def unit(x, u):
                return "n/a" if x != x else f"{x:,.1f} {u}"

            w(f"| {label} | {unit(mb('start'), 'MB')} | {unit(mb('after_load'), 'MB')} "
              f"| {unit(mb('idle'), 'MB')} | {unit(mb('idle', 3), 'MB')} | {held} "
              f"| {unit(per, 'KB')} |")
        w("")

    w("## Targets (issue 8)")
    w("")
    w("| target | measured | met |")
    w("| --- | --- | --- |")

    def target(name, value, ok):
        w(f"| {name} | {value} | {'yes' if ok else 'no'} |")

    for test, label in (("h1", "HTTP/1.1"), ("h2", "HTTP/2")):
        f, n, p = (summary.get((test, g)) for g in ("full", "nginx", "pass"))
        if f and n:
            target(f"{label}: full-policy req/s ≥ 1.0x nginx", ratio(f["rps"], n["rps"]),
                   f["rps"] >= n["rps"])
            # At the same load when it was measured; else at saturation, which is not that.
            ff, nf = summary.get((test + "fixed", "full")), summary.get((test + "fixed", "nginx"))
            if ff and nf:
                target(f"{label}: p99 ≤ nginx's at the same load "
                       f"({meta.get('rate_' + test, '?')} req/s)",
                       f"{ff['p99']:.2f} ms vs {nf['p99']:.2f} ms", ff["p99"] <= nf["p99"])
            else:
                target(f"{label}: p99 ≤ nginx's (at saturation: not the same load)",
                       f"{f['p99']:.2f} ms vs {n['p99']:.2f} ms", f["p99"] <= n["p99"])
        if f and p:
            target(f"{label}: policy overhead ≤ 5% of passthrough", ratio(f["rps"], p["rps"]),
                   f["rps"] >= 0.95 * p["rps"])
    f, n = summary.get(("tls", "full")), summary.get(("tls", "nginx"))
    if f and n:
        target("TLS handshakes/s ≥ nginx's", ratio(f["rps"], n["rps"]), f["rps"] >= n["rps"])
    m = summary.get(("mem", "full"))
    if m:
        target("RSS idle < 30 MB", f"{m['start']:.1f} MB", m["start"] < 30)
        if m["idle"] == m["idle"]:  # not NaN: the idle connections were measured
            target(f"RSS with {meta.get('idle_conns', '?')} idle conns < 150 MB",
                   f"{m['idle']:.1f} MB", m["idle"] < 150)
    w("")
    if meta.get("notes"):
        w("## Notes")
        w("")
        for note in meta["notes"].split(" || "):
            w(f"- {note}")
        w("")

    text = "\n".join(out)
    with open(out_md, "w") as f:
        f.write(text)
    print(text)


def main():
    args = sys.argv[1:]
    if args[:1] == ["h2pct"] and len(args) == 2:
        h2pct(args[1])
    elif args[:1] == ["rate"] and len(args) == 5:
        rate(*args[1:])
    elif args[:1] == ["render"] and len(args) == 5:
        render(*args[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
