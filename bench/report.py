#!/usr/bin/python3
"""Turns RESULT lines of the core benchmarks into a markdown table and a chart.

    report.py RESULTS_FILE [--md docs/performance.md] [--png docs/perf_core.png]

    report.py IO_RESULTS_FILE --io [--md docs/performance.md] [--png docs/perf_io.png]

RESULTS_FILE holds the output of the benchmark programs (see bench/README.md):

    RESULT workload=<w> system=<s> value=<number> unit=<u> check=<ok|FAIL>
    NOTE <free text>             (written by scripts/bench.sh, listed under the table)

Several RESULT lines for one (workload, system) are reduced to their median;
one FAIL among them marks the cell FAIL. The table goes to stdout; with --md
it also replaces the region between the markers
<!-- core-bench:begin --> and <!-- core-bench:end --> of that file (creating
the file, or appending the region, if needed; nothing else is touched); with
--png a bar chart is written (matplotlib, Agg backend; skipped with a warning
if matplotlib is missing).

With --io the file holds the I/O benchmark lines of scripts/bench_io.sh
(workload echo or http, unit req/s, with p99 latency; see bench/README.md):

    RESULT workload=<echo|http> system=<s> value=<req/s> unit=req/s p99_us=<x>
           [cpu_us=<y>] check=<ok|FAIL>          (one line)

and the region is the one between <!-- io-bench:begin --> and
<!-- io-bench:end -->; the chart shows throughput per system.
"""

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys

BEGIN = "<!-- core-bench:begin -->"
END = "<!-- core-bench:end -->"

WORKLOADS = [
    "switch", "yield", "spawn_await", "spawn_await_batch", "skynet",
    "mutex", "pingpong", "idle", "sleep",
]
SYSTEMS = ["kio", "go", "boost_context", "boost_fcontext", "boost_fiber"]
SYSTEM_LABEL = {
    "kio": "kio",
    "go": "Go",
    "boost_context": "Boost.Context",
    "boost_fcontext": "fcontext",
    "boost_fiber": "Boost.Fiber",
}
WORKLOAD_LABEL = {
    "switch": "switch",
    "yield": "yield",
    "spawn_await": "spawn+await",
    "spawn_await_batch": "spawn+await (batch 1000)",
    "skynet": "skynet 1M",
    "mutex": "mutex 8x1M",
    "pingpong": "ping-pong (mutex+cond)",
    "idle": "idle 100k",
    "sleep": "sleep 100k x 10 ms",
}

# Targets: (competitor system, max ratio kio/competitor) or (None, absolute max).
TARGETS = {
    "switch": ("boost_context", 1.0),
    "yield": ("go", 0.3),
    "spawn_await": ("go", 0.2),
    "spawn_await_batch": ("go", 0.2),
    "skynet": ("go", 0.05),
    "mutex": ("go", 1.0),
    "pingpong": ("go", 0.5),
    "idle": (None, 4710.0),
    "sleep": ("go", 0.2),
}
# Other ratios worth showing next to the target one.
EXTRA_RATIOS = {
    "switch": ["boost_fcontext"],
}

RESULT_RE = re.compile(
    r"^RESULT workload=(\S+) system=(\S+) value=([-+0-9.eEinfa]+) unit=(\S+) check=(\S+)\s*$")


def parse(path):
    cells = {}  # (workload, system) -> {"values": [...], "unit": u, "ok": bool}
    notes = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("NOTE "):
                notes.append(line[5:].strip())
                continue
            m = RESULT_RE.match(line.strip())
            if not m:
                continue
            w, s, v, u, c = m.groups()
            try:
                value = float(v)
            except ValueError:
                value = float("nan")
            cell = cells.setdefault((w, s), {"values": [], "unit": u, "ok": True})
            cell["values"].append(value)
            cell["ok"] = cell["ok"] and c == "ok"
    out = {}
    for key, cell in cells.items():
        vals = [v for v in cell["values"] if v == v]
        out[key] = {
            "value": statistics.median(vals) if vals else float("nan"),
            "n": len(cell["values"]),
            "unit": cell["unit"],
            "ok": cell["ok"],
        }
    return out, notes


def fmt_value(v, unit):
    if v != v:
        return "nan"
    if unit == "bytes/task":
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_cell(res, w, s):
    r = res.get((w, s))
    if not r:
        return "—"
    text = fmt_value(r["value"], r["unit"])
    if not r["ok"]:
        text += " **FAIL**"
    return text


def ratio(res, w, comp):
    k, c = res.get((w, "kio")), res.get((w, comp))
    if not k or not c or not c["value"] or k["value"] != k["value"] or c["value"] != c["value"]:
        return None
    return k["value"] / c["value"]


def evaluate(res, w):
    """Returns (ratio text, target text, met text)."""
    comp, limit = TARGETS[w]
    k = res.get((w, "kio"))
    parts = []
    if comp is None:
        target = f"≤ {limit:,.0f} B/task"
        for other in ("go", "boost_fiber"):
            r = ratio(res, w, other)
            if r is not None:
                parts.append(f"{r:.2f}× {SYSTEM_LABEL[other]}")
        if not k:
            met = "n/a"
        elif not k["ok"]:
            met = "FAIL"
        else:
            met = "yes" if k["value"] <= limit else "no"
        return "; ".join(parts) or "—", target, met
    target = f"≤ {limit:g}× {SYSTEM_LABEL[comp]}"
    r = ratio(res, w, comp)
    if r is not None:
        parts.append(f"**{r:.2f}× {SYSTEM_LABEL[comp]}**")
    for other in EXTRA_RATIOS.get(w, []) + ["boost_fiber"]:
        if other == comp:
            continue
        ro = ratio(res, w, other)
        if ro is not None:
            parts.append(f"{ro:.2f}× {SYSTEM_LABEL[other]}")
    c = res.get((w, comp))
    if not k or r is None:
        met = "n/a"
    elif not k["ok"] or (c and not c["ok"]):
        met = "FAIL"
    else:
        met = "yes" if r <= limit else "no"
    return "; ".join(parts) or "—", target, met


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - best effort machine description
        return ""


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not cpu:
        cpu = platform.processor() or platform.machine()
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1048576:.1f} GiB RAM"
                    break
    except (OSError, ValueError):
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count() or "?"),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "mem": mem,
        "gcc": run(["gcc", "-dumpfullversion"]),
        "go": run(["go", "version"]).replace("go version ", ""),
        "boost": "",
    }
    try:
        with open("/usr/include/boost/version.hpp", encoding="utf-8") as f:
            m = re.search(r'#define BOOST_LIB_VERSION "([^"]+)"', f.read())
            if m:
                info["boost"] = m.group(1).replace("_", ".")
    except OSError:
        pass
    return info


def table(res):
    cols = ["workload", "unit", "kio", "Go", "Boost.Context", "fcontext", "Boost.Fiber",
            "ratio kio/competitor", "target", "met?"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    summary = {"yes": 0, "no": 0, "n/a": 0, "FAIL": 0}
    for w in WORKLOADS:
        units = {r["unit"] for (ww, _), r in res.items() if ww == w}
        unit = units.pop() if len(units) == 1 else ("/".join(sorted(units)) or "—")
        ratio_text, target, met = evaluate(res, w)
        summary[met] = summary.get(met, 0) + 1
        row = [WORKLOAD_LABEL[w], unit] + [fmt_cell(res, w, s) for s in SYSTEMS]
        row += [ratio_text, target, met]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), summary


def region(res, notes, info, png_name):
    tbl, summary = table(res)
    out = [
        f"Measured {info['date']} by `scripts/bench.sh`.",
        "",
        f"Machine: {info['cpu']}, {info['nproc']} CPUs"
        + (f", {info['mem']}" if info["mem"] else "")
        + f"; {info['kernel']}; gcc {info['gcc'] or '?'}, {info['go'] or 'go ?'}, "
        f"Boost {info['boost'] or '?'}.",
        "",
        "Lower is better everywhere. Values are medians (3 timed runs after a warm-up; "
        "idle: median of 3 cold processes). ns/op is per switch, per yield, per task, "
        "per lock/unlock pair or per round trip; ratios are kio divided by the competitor "
        "(the bold one is the target's).",
        "",
        tbl,
        "",
        f"Targets met: {summary.get('yes', 0)} of {len(WORKLOADS)}"
        + (f"; not met: {summary['no']}" if summary.get("no") else "")
        + (f"; failed checks: {summary['FAIL']}" if summary.get("FAIL") else "")
        + (f"; no result: {summary['n/a']}" if summary.get("n/a") else "")
        + ".",
    ]
    if notes:
        out += ["", "Notes from this run:", ""] + [f"- {n}" for n in notes]
    if png_name:
        out += ["", f"![core benchmarks]({png_name})"]
    return "\n".join(out)


INTRO = """# Performance

Benchmarks of the kio core runtime against Go (goroutines) and Boost
(Boost.Context, Boost.Fiber), and of kio's network I/O against raw epoll, Go,
libuv and nginx. The workloads, their exact definitions and how each
competitor implements them are described in `bench/README.md`; run
`scripts/bench.sh` to reproduce the tables below (it rewrites only the regions
between the markers; `scripts/bench_io.sh` runs the I/O part alone).

"""


def write_md(path, body, begin=BEGIN, end=END, heading="## Core runtime benchmarks"):
    block = f"{begin}\n{body}\n{end}"
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        b, e = text.find(begin), text.find(end)
        if b != -1 and e != -1 and e > b:
            text = text[:b] + block + text[e + len(end):]
        else:
            text = text.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        text = INTRO + f"{heading}\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


COLORS = {
    "kio": "#2b7bba",
    "go": "#00a5a5",
    "boost_context": "#c9742e",
    "boost_fcontext": "#e8a35e",
    "boost_fiber": "#8c5fa8",
}


def write_png(path, res, info):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib not available, no chart written "
              "(apt-get install -y python3-matplotlib)", file=sys.stderr)
        return False
    fig, axes = plt.subplots(3, 3, figsize=(13, 10))
    for ax, w in zip(axes.flat, WORKLOADS):
        systems = [s for s in SYSTEMS if (w, s) in res]
        vals = [res[(w, s)]["value"] for s in systems]
        unit = res[(w, systems[0])]["unit"] if systems else ""
        bars = ax.bar(range(len(systems)), vals, color=[COLORS[s] for s in systems])
        for b, s, v in zip(bars, systems, vals):
            ok = res[(w, s)]["ok"]
            if not ok:
                b.set_hatch("xx")
                b.set_edgecolor("red")
            ax.annotate(fmt_value(v, unit) + ("" if ok else " FAIL"),
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        comp, limit = TARGETS[w]
        level = None
        if comp is None:
            level = limit
        elif (w, comp) in res:
            level = res[(w, comp)]["value"] * limit
        if level is not None:
            ax.axhline(level, color="red", linestyle="--", linewidth=1)
            ax.annotate("target", (len(systems) - 0.5 if systems else 0, level),
                        ha="right", va="bottom", fontsize=7, color="red")
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([SYSTEM_LABEL[s] for s in systems], fontsize=8)
        ax.set_title(f"{WORKLOAD_LABEL[w]} ({unit})", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
        top = max([v for v in vals if v == v] + [level or 0, 0])
        ax.set_ylim(0, top * 1.18 if top > 0 else 1)
        if not systems:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"kio core benchmarks (lower is better) — {info['cpu']}, {info['nproc']} CPUs, "
                 f"{info['date']}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# I/O benchmarks (scripts/bench_io.sh): echo and http throughput and p99.

IO_BEGIN = "<!-- io-bench:begin -->"
IO_END = "<!-- io-bench:end -->"
IO_HEADING = "## I/O benchmarks"

IO_WORKLOADS = ["echo", "http"]
IO_SYSTEMS = {
    "echo": ["kio_1t", "kio_2t", "epoll", "go", "libuv"],
    "http": ["kio_1t", "kio_2t", "nginx_w1", "nginx_w2", "go"],
}
IO_LABEL = {
    "kio_1t": "kio, 1 thread",
    "kio_2t": "kio, 2 threads",
    "epoll": "raw epoll (1 thread)",
    "go": "Go (GOMAXPROCS=CPUs)",
    "libuv": "libuv (1 thread)",
    "nginx_w1": "nginx, 1 worker",
    "nginx_w2": "nginx, 2 workers",
}
IO_WORKLOAD_LABEL = {
    "echo": "echo: 64 connections × 64-byte request/response (echo_client)",
    "http": "http: wrk -t1 -c64 --latency, GET / → \"Hello, World!\"",
}
IO_RESULT_RE = re.compile(
    r"^RESULT workload=(\S+) system=(\S+) value=([-+0-9.eEinfa]+) unit=(\S+)"
    r"((?: [a-z0-9_]+=\S+)*) check=(\S+)\s*$")


def io_float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def io_median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def io_parse(path):
    cells, notes = {}, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("NOTE "):
                notes.append(line[5:].strip())
                continue
            m = IO_RESULT_RE.match(line.strip())
            if not m:
                continue
            w, s, v, u, extra, c = m.groups()
            fields = dict(kv.split("=", 1) for kv in extra.split())
            cell = cells.setdefault((w, s), {"values": [], "p99": [], "cpu": [], "unit": u,
                                             "ok": True})
            cell["values"].append(io_float(v))
            cell["p99"].append(io_float(fields.get("p99_us")))
            cell["cpu"].append(io_float(fields.get("cpu_us")))
            cell["ok"] = cell["ok"] and c == "ok"
    out = {}
    for key, cell in cells.items():
        out[key] = {
            "value": io_median(cell["values"]),
            "p99": io_median(cell["p99"]),
            "cpu": io_median(cell["cpu"]),
            "unit": cell["unit"],
            "ok": cell["ok"],
        }
    return out, notes


def io_best(res, w, prefix):
    """The system named prefix* with the highest throughput: (system, result) or (None, None)."""
    best = (None, None)
    for s in IO_SYSTEMS[w]:
        r = res.get((w, s))
        if s.startswith(prefix) and r and r["value"] == r["value"]:
            if best[1] is None or r["value"] > best[1]["value"]:
                best = (s, r)
    return best


def io_targets(res):
    """[(target text, measured text, met)] for the four I/O targets."""
    rows = []

    def add(text, w, comp_prefix, limit, field="value", lower_is_better=False):
        ks, k = io_best(res, w, "kio")
        cs, c = io_best(res, w, comp_prefix)
        if not k or not c or not c[field] or k[field] != k[field] or c[field] != c[field]:
            rows.append((text, "no result", "n/a"))
            return
        r = k[field] / c[field]
        measured = f"{r:.2f}× ({IO_LABEL[ks]} vs {IO_LABEL[cs]})"
        if not k["ok"] or not c["ok"]:
            met = "FAIL"
        else:
            met = "yes" if (r <= limit if lower_is_better else r >= limit) else "no"
        rows.append((text, measured, met))

    add("echo req/s: kio ≥ 0.95× raw epoll", "echo", "epoll", 0.95)
    add("echo req/s: kio ≥ 1.5× Go", "echo", "go", 1.5)
    add("http req/s: kio ≥ 1.1× nginx (best worker count)", "http", "nginx", 1.1)
    add("echo p99: kio ≤ 1.5× raw epoll", "echo", "epoll", 1.5, field="p99",
        lower_is_better=True)
    # Not targets: server CPU per request, best (lowest) of each side, which a
    # loaded machine disturbs less than req/s.
    for w, comp, text in (("echo", "epoll", "raw epoll"), ("echo", "go", "Go"),
                          ("http", "nginx", "nginx")):
        def lowest(prefix):
            found = [(res[(w, s)]["cpu"], s) for s in IO_SYSTEMS[w]
                     if s.startswith(prefix) and (w, s) in res
                     and res[(w, s)]["cpu"] == res[(w, s)]["cpu"]]
            return min(found) if found else (None, None)
        (kc, ks), (cc, cs) = lowest("kio"), lowest(comp)
        if kc is not None and cc:
            rows.append((f"(info) {w} server CPU per request: kio / {text}",
                         f"{kc / cc:.2f}× ({IO_LABEL[ks]} vs {IO_LABEL[cs]})", "—"))
    return rows


def io_tables(res):
    out = []
    for w in IO_WORKLOADS:
        systems = [s for s in IO_SYSTEMS[w] if (w, s) in res]
        if not systems:
            continue
        ks, k = io_best(res, w, "kio")
        out += [f"**{IO_WORKLOAD_LABEL[w]}**", "",
                "| system | req/s | p99 µs | best kio / system (req/s) | server CPU µs/req "
                "| check |",
                "|---|---|---|---|---|---|"]
        for s in systems:
            r = res[(w, s)]
            rel = "—"
            if k and r["value"] and s != ks and r["value"] == r["value"]:
                rel = f"{k['value'] / r['value']:.2f}×"
            name = f"**{IO_LABEL[s]}**" if s == ks else IO_LABEL[s]
            cpu = fmt_value(r["cpu"], "us") if r["cpu"] == r["cpu"] else "—"
            out.append(f"| {name} | {fmt_value(r['value'], r['unit'])} | "
                       f"{fmt_value(r['p99'], 'us')} | {rel} | {cpu} | "
                       f"{'ok' if r['ok'] else '**FAIL**'} |")
        out.append("")
    return out


def io_region(res, notes, info, png_name):
    targets = io_targets(res)
    met = sum(1 for t in targets if t[2] == "yes")
    n_targets = sum(1 for t in targets if t[2] != "—")
    out = [
        f"Measured {info['date']} by `scripts/bench_io.sh`.",
        "",
        f"Machine: {info['cpu']}, {info['nproc']} CPUs"
        + (f", {info['mem']}" if info["mem"] else "")
        + f"; {info['kernel']}; gcc {info['gcc'] or '?'}, {info['go'] or 'go ?'}, "
        f"{info.get('nginx') or 'nginx ?'}, libuv {info.get('libuv') or '?'}.",
        "",
        "Higher req/s is better, lower p99 is better. Client and server run on the same "
        "machine and share its CPUs; nothing is pinned. The bold kio row is the best kio "
        "configuration, the one the targets use. Server CPU µs/req is the server's user + "
        "system CPU time (all threads and processes) divided by the requests it served "
        "during the run: the cost per request, which depends less on other load on the "
        "machine than req/s does.",
        "",
    ]
    out += io_tables(res)
    out += ["| target (same run) | measured | met? |", "|---|---|---|"]
    out += [f"| {t} | {m} | {ok} |" for t, m, ok in targets]
    out += ["", f"I/O targets met: {met} of {n_targets}."]
    if notes:
        out += ["", "Notes from this run:", ""] + [f"- {n}" for n in notes]
    if png_name:
        out += ["", f"![I/O benchmarks]({png_name})"]
    return "\n".join(out)


def io_machine():
    info = machine()
    info["nginx"] = ""
    try:
        r = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10)
        info["nginx"] = (r.stderr or r.stdout).strip().replace("nginx version: ", "")
    except Exception:  # noqa: BLE001 - best effort
        pass
    info["libuv"] = run(["pkg-config", "--modversion", "libuv"])
    return info


def io_write_png(path, res, info):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib not available, no chart written "
              "(apt-get install -y python3-matplotlib)", file=sys.stderr)
        return False
    color = {"kio": "#2b7bba", "epoll": "#7f7f7f", "go": "#00a5a5", "libuv": "#c9742e",
             "nginx": "#3b9e3b"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, w in zip(axes, IO_WORKLOADS):
        systems = [s for s in IO_SYSTEMS[w] if (w, s) in res]
        vals = [res[(w, s)]["value"] for s in systems]
        bars = ax.bar(range(len(systems)), vals,
                      color=[color.get(s.split("_")[0], "#999999") for s in systems])
        for b, s, v in zip(bars, systems, vals):
            r = res[(w, s)]
            label = f"{v / 1000:,.1f}k\np99 {fmt_value(r['p99'], 'us')} µs"
            if not r["ok"]:
                b.set_hatch("xx")
                b.set_edgecolor("red")
                label += "\nFAIL"
            ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([IO_LABEL[s].replace(" (", "\n(").replace(", ", "\n") for s in systems],
                           fontsize=8)
        ax.set_title(IO_WORKLOAD_LABEL[w], fontsize=9)
        ax.set_ylabel("requests per second", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        top = max([v for v in vals if v == v] + [0])
        ax.set_ylim(0, top * 1.25 if top > 0 else 1)
        if not systems:
            ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"kio I/O benchmarks (throughput, higher is better) — {info['cpu']}, "
                 f"{info['nproc']} CPUs, {info['date']}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def io_main(args):
    res, notes = io_parse(args.results)
    unknown = sorted({k for k in res if k[0] not in IO_SYSTEMS or k[1] not in IO_SYSTEMS[k[0]]})
    for w, s in unknown:
        notes.append(f"ignored unknown result workload={w} system={s}")
    info = io_machine()
    png_written = bool(args.png) and io_write_png(args.png, res, info)
    png_rel = None
    if png_written and args.md:
        png_rel = os.path.relpath(os.path.abspath(args.png),
                                  os.path.dirname(os.path.abspath(args.md)))
    body = io_region(res, notes, info, png_rel)
    print(body)
    if args.md:
        write_md(args.md, body, IO_BEGIN, IO_END, IO_HEADING)
        print(f"\nreport.py: wrote {args.md}" + (f" and {args.png}" if png_written else ""),
              file=sys.stderr)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="file with RESULT (and NOTE) lines")
    ap.add_argument("--md", help="markdown file to update between the core-bench markers")
    ap.add_argument("--png", help="bar chart to write")
    ap.add_argument("--io", action="store_true",
                    help="the file holds I/O benchmark lines (scripts/bench_io.sh)")
    args = ap.parse_args()
    if args.io:
        return io_main(args)

    res, notes = parse(args.results)
    unknown = sorted({k for k in res if k[0] not in WORKLOADS or k[1] not in SYSTEMS})
    for w, s in unknown:
        notes.append(f"ignored unknown result workload={w} system={s}")
    info = machine()
    png_written = False
    if args.png:
        png_written = write_png(args.png, res, info)
    png_rel = None
    if png_written and args.md:
        png_rel = os.path.relpath(os.path.abspath(args.png),
                                  os.path.dirname(os.path.abspath(args.md)))
    body = region(res, notes, info, png_rel)
    print(body)
    if args.md:
        write_md(args.md, body)
        print(f"\nreport.py: wrote {args.md}" + (f" and {args.png}" if png_written else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
