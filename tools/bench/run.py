#!/usr/bin/env python3
"""Runs the benchmark suite (`make bench`, `make bench-quick`) and writes build/bench/results.*;
a full run also writes docs/bench.md and docs/bench/cpu_per_rt.svg.

The echo servers are measured side by side: each case runs every server in turn, the order
rotated each repetition so that drift on the machine hits all of them alike. The server is
pinned to CPU 0 and the load generator to CPU 1; the server's CPU time is read from /proc
exactly around the load generator's measured window. Then every other bench program found in
build/bench/ runs and its `BENCH {json}` lines are collected into tables.
"""
import argparse
import glob
import importlib
import datetime
import itertools
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

OUT = "build/bench"
DOCS_PAGE = "docs/bench.md"
DOCS_CHART = "docs/bench/cpu_per_rt.svg"
LOADGEN = f"{OUT}/loadgen"
SERVERS = {"floor": f"{OUT}/server_floor", "asyncdispatch": "build/bin/echo_server"}
# The same echo server on the poll(2) backend: its cost grows with the descriptors it polls.
SERVERS["asyncdispatch-poll"] = "build/poll/bin/echo_server"
SERVERS.update({n: f"{OUT}/server_{n}" for n in ("libuv", "libev", "libevent", "asio", "nim")})
PROGRAM_PREFIXES = ("micro_", "timers_", "idle_")
PEER_PACKAGES = ("libuv1-dev", "libev-dev", "libevent-dev", "libasio-dev", "nim")

FULL = dict(cases=[(c, s) for c in (1, 50, 1000) for s in (64, 16384)], reps=3, warmup=1.0,
            duration=3.0, trace_warmup=0.5, trace_duration=1.5, budget=16 * 60, program_cap=120)
QUICK = dict(cases=[(50, 64)], reps=1, warmup=0.5, duration=1.5, trace_warmup=0.5,
             trace_duration=1.5, budget=100, program_cap=30)

notes = []
ports = itertools.count(20000 + os.getpid() % 50 * 200)


def note(text):
    """Remarks end up both on the terminal now and in results.md later."""
    print(f"note: {text}", flush=True)
    notes.append(text)


def fresh_port():
    """A port nobody holds, not even in TIME_WAIT, so no run sees the previous one's sockets."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


class Lines:
    """Reads a child's stdout line by line with a deadline, so a stuck child cannot hang us."""

    def __init__(self, proc):
        self.fd, self.buf = proc.stdout.fileno(), b""

    def next(self, deadline):
        """The next line, or None at end of file or when the deadline passes."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace")


def stop(proc, sig=signal.SIGTERM, wait=3):
    """Ends a child for sure: politely first, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid):
    """utime+stime of a process; the fields after the last ')' dodge spaces in its name."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_strace(path):
    """Total calls and epoll_ctl calls from `strace -c`; columns are sliced by the dashes."""
    total = epoll_ctl = None
    spans = None
    with open(path) as f:
        for line in f:
            if line.startswith("------"):
                spans = [m.span() for m in re.finditer(r"-+", line)]
                continue
            if not spans or len(spans) < 6:
                continue
            calls, name = line[slice(*spans[3])].strip(), line[spans[5][0]:].strip()
            if not calls.isdigit():
                continue
            if name == "total":
                total = int(calls)
            elif name == "epoll_ctl":
                epoll_ctl = int(calls)
    return total, epoll_ctl or 0


def run_echo(server, conns, size, warmup, duration, pin, trace=False):
    """One server under one load; returns the load generator's figures plus the server's CPU."""
    port = fresh_port()
    result = dict(server=server, connections=conns, size=size, traced=trace, errors=0)
    log = open(f"{OUT}/logs/server_{server}.log", "w")
    srv = subprocess.Popen(["taskset", "-c", pin[0], SERVERS[server], str(port)],
                           stdout=log, stderr=log)
    lg = tracer = None
    try:
        if not wait_for_port(srv, port):
            return dict(result, failed=f"server did not listen (exit {srv.poll()})")
        lg = subprocess.Popen(["taskset", "-c", pin[1], LOADGEN, "--port", str(port),
                               "--connections", str(conns), "--size", str(size),
                               "--warmup", str(warmup), "--duration", str(duration)],
                              stdout=subprocess.PIPE, stderr=log)
        lines, deadline = Lines(lg), time.monotonic() + warmup + duration + 25
        cpu = {}
        while (line := lines.next(deadline)) is not None:
            if line == "MEASURE START":
                cpu["start"] = cpu_seconds(srv.pid)
                if trace:
                    tracer = subprocess.Popen(["strace", "-f", "-c", "-p", str(srv.pid), "-o",
                                               f"{OUT}/logs/strace_{server}.txt"],
                                              stdout=subprocess.DEVNULL, stderr=log)
            elif line == "MEASURE END":
                cpu["end"] = cpu_seconds(srv.pid)
                if tracer:
                    stop(tracer, signal.SIGINT, 10)
            elif line.startswith("LOADGEN "):
                result.update(json.loads(line[len("LOADGEN "):]))
        if "roundtrips" not in result:
            return dict(result, failed="load generator gave no result (timeout or crash)")
        if srv.poll() is not None:
            return dict(result, failed=f"server exited with {srv.returncode}")
        if len(cpu) == 2 and result["roundtrips"] > 0:
            result["cpu_us_per_rt"] = (cpu["end"] - cpu["start"]) * 1e6 / result["roundtrips"]
        if trace:
            total, ctl = parse_strace(f"{OUT}/logs/strace_{server}.txt")
            if total is not None and result["roundtrips"] > 0:
                result["syscalls_per_rt"] = total / result["roundtrips"]
                result["epoll_ctl_per_rt"] = ctl / result["roundtrips"]
        return result
    except (OSError, ValueError) as e:
        return dict(result, failed=f"{type(e).__name__}: {e}")
    finally:
        for proc in (tracer, lg, srv):
            if proc:
                stop(proc)
        log.close()


def wait_for_port(proc, port, timeout=5.0):
    """True once the server accepts a connection; False if it died or never listened."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


def run_servers(cfg, servers, pin):
    """Every case x repetition x server, rotating the order; then one strace run per pair."""
    runs = []
    for conns, size in cfg["cases"]:
        for rep in range(cfg["reps"]):
            k = rep % len(servers)
            for server in servers[k:] + servers[:k]:
                r = run_echo(server, conns, size, cfg["warmup"], cfg["duration"], pin)
                runs.append(dict(r, rep=rep))
                show(r)
        if shutil.which("strace"):
            for server in servers:
                r = run_echo(server, conns, size, cfg["trace_warmup"], cfg["trace_duration"],
                             pin, trace=True)
                runs.append(r)
                show(r)
    if not shutil.which("strace"):
        note("strace is missing: no system-call counts (apt-get install strace)")
    return runs


def show(r):
    """One progress line per run, so a long `make bench` shows it is alive."""
    what = "strace" if r["traced"] else f"rep {r.get('rep', 0) + 1}"
    head = f"  {r['connections']:>4} x {r['size']:>5} B  {r['server']:<13} {what:<7}"
    if "failed" in r:
        print(f"{head} FAILED: {r['failed']}", flush=True)
    else:
        cpu = r.get("cpu_us_per_rt")
        extra = f" {r['syscalls_per_rt']:.2f} syscalls/rt" if "syscalls_per_rt" in r else ""
        print(f"{head} {r['roundtrips_per_s']:>9.0f} rt/s  "
              f"{'-' if cpu is None else f'{cpu:.2f}'} us cpu/rt  errors {r['errors']}{extra}",
              flush=True)


def run_programs(cfg, quick, deadline):
    """Every micro_/timers_/idle_ program; near the time budget's end, they all run --quick."""
    progs = sorted(p for p in os.listdir(OUT) if p.startswith(PROGRAM_PREFIXES)
                   and os.path.isfile(f"{OUT}/{p}") and os.access(f"{OUT}/{p}", os.X_OK)
                   and not p.endswith(".d"))
    records = []
    # One mode for all of them: a table mixing --quick and full figures would mislead.
    fast = quick or deadline - time.monotonic() < 150
    if fast and not quick:
        note("the bench programs ran with --quick to keep `make bench` within its time budget")
    timeout = QUICK["program_cap"] if fast else cfg["program_cap"]
    for prog in progs:
        start = time.monotonic()
        with open(f"{OUT}/logs/{prog}.log", "w") as log:
            proc = subprocess.Popen([f"{OUT}/{prog}"] + (["--quick"] if fast else []),
                                    stdout=subprocess.PIPE, stderr=log)
            lines, found = Lines(proc), 0
            while (line := lines.next(start + timeout)) is not None:
                if line.startswith("BENCH "):
                    try:
                        records.append(dict(json.loads(line[6:]), program=prog))
                        found += 1
                    except ValueError:
                        note(f"{prog}: unreadable line {line!r}")
            stop(proc, wait=1)
        took = time.monotonic() - start
        status = "timed out" if took >= timeout else f"exit {proc.returncode}"
        print(f"  {prog:<28} {found:>3} figures, {took:5.1f} s, {status}", flush=True)
        if status != "exit 0":
            note(f"{prog}: {status} (see {OUT}/logs/{prog}.log)")
    return records


def run_protocols(quick, pin, only):
    """The protocol benches: each tools/bench/proto_NAME.py runs an example server of
    tools/examples/ against its anchor and returns {"markdown": [lines], "data": ...}."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    sections = {}
    for path in sorted(glob.glob(f"{here}/proto_*.py")):
        name = os.path.basename(path)[len("proto_"):-len(".py")]
        if only and name not in only:
            continue
        print(f"protocol bench: {name}", flush=True)
        try:
            sections[name] = importlib.import_module(f"proto_{name}").run(
                quick=quick, pin=pin, note=note)
        except Exception as e:  # one failed section must not lose the others' figures
            note(f"protocol bench {name} failed: {e!r}")
    return sections


def command_output(cmd):
    """A command's first output line, or '?' when it is missing or fails."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].strip() if out.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def environment():
    """What the figures were measured on: they mean little without it."""
    model = "?"
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
    versions = {"g++": command_output(["g++", "--version"])}
    for pkg in PEER_PACKAGES:
        v = command_output(["dpkg-query", "-W", "-f=${Version}\n", pkg])
        versions[pkg] = v if v != "?" else "not installed"
    return dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                machine=dict(nproc=os.cpu_count(), cpu=model, kernel=platform.release()),
                versions=versions)


def median(runs, key):
    """Median over the repetitions that have the figure, None if none has it."""
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(runs, cases, servers):
    """Per case and server: medians of timed runs, strace counts, errors of every run."""
    table = {}
    for conns, size in cases:
        for server in servers:
            mine = [r for r in runs if (r["server"], r["connections"], r["size"]) ==
                    (server, conns, size)]
            timed = [r for r in mine if not r["traced"]]
            ok = [r for r in timed if "failed" not in r]
            traced = [r for r in mine if r["traced"] and "failed" not in r]
            table[f"{conns}x{size}", server] = dict(
                roundtrips_per_s=median(ok, "roundtrips_per_s"),
                cpu_us_per_rt=median(ok, "cpu_us_per_rt"), p50_us=median(ok, "p50_us"),
                p99_us=median(ok, "p99_us"), errors=sum(r["errors"] for r in mine),
                failed=sorted({r["failed"] for r in mine if "failed" in r}),
                syscalls_per_rt=median(traced, "syscalls_per_rt"),
                epoll_ctl_per_rt=median(traced, "epoll_ctl_per_rt"))
    return table


def fmt(value, spec):
    """A figure for the tables, '-' when it is missing."""
    return "-" if value is None else format(value, spec)


def result_tables(cfg, servers, table, records):
    """The echo tables, one per case, and one table per bench program family."""
    out = []
    for conns, size in cfg["cases"] if table else []:
        case = f"{conns}x{size}"
        floor = (table.get((case, "floor")) or {}).get("cpu_us_per_rt")
        out += [f"## Echo: {conns} connection(s), {size}-byte messages", "",
                "| server | round trips/s | server CPU µs per round trip | ratio to floor | "
                "syscalls per rt | epoll_ctl per rt | p50 µs | p99 µs | errors |",
                "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
        for server in servers:
            s = table[case, server]
            cpu = s["cpu_us_per_rt"]
            ratio = cpu / floor if cpu is not None and floor else None
            errors = str(s["errors"]) + "".join(f", failed: {f}" for f in s["failed"])
            out.append(f"| {server} | {fmt(s['roundtrips_per_s'], ',.0f')} | {fmt(cpu, '.2f')} | "
                       f"{fmt(ratio, '.2f')} | {fmt(s['syscalls_per_rt'], '.2f')} | "
                       f"{fmt(s['epoll_ctl_per_rt'], '.2f')} | {fmt(s['p50_us'], '.1f')} | "
                       f"{fmt(s['p99_us'], '.1f')} | {errors} |")
        out.append("")
    for bench in ("micro", "timers", "idle"):
        mine = [r for r in records if r.get("bench") == bench]
        if not mine:
            continue
        impls = sorted({r["impl"] for r in mine},
                       key=lambda i: (not i.startswith("asyncdispatch"), i))
        cells = {(r["name"], r["impl"]): f"{r['value']:.4g} {r.get('unit', '')}" for r in mine}
        out += [f"## {bench}", "", "| what | " + " | ".join(impls) + " |",
                "|---|" + "--:|" * len(impls)]
        for name in dict.fromkeys(r["name"] for r in mine):
            out.append(f"| {name} | " + " | ".join(cells.get((name, i), "-") for i in impls) + " |")
        out.append("")
    return out


def markdown(env, cfg, servers, table, records, mode, protocols):
    """The human-readable report."""
    m, out = env["machine"], []
    out += [f"# asyncdispatch benchmarks ({mode})", "",
            f"- date: {env['date']}",
            f"- machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
            f"- echo runs: {cfg['warmup']} s warm-up + {cfg['duration']} s measured, "
            f"{cfg['reps']} repetition(s), order rotated; server on CPU 0, load generator on CPU 1",
            "- system calls per round trip come from one extra run under `strace -f -c`. strace "
            "slows the server several times over, so its round trips/s and CPU mean nothing, but "
            "the calls per round trip stay meaningful (epoll_wait's share shifts a little, as a "
            "slower server finds more events per wait)",
            ""]
    out += result_tables(cfg, servers, table, records)
    for section in protocols.values():
        out += section["markdown"] + [""]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def machine_class(env):
    """'2-core VM (AMD EPYC ...)': what the figures were measured on, without the date."""
    m = env["machine"]
    with open("/proc/cpuinfo") as f:
        virtual = any(l.startswith("flags") and " hypervisor" in l for l in f)
    return f"{m['nproc']}-core {'VM' if virtual else 'machine'} ({m['cpu']}, Linux)"


def figure(records, bench, name, impl):
    """One bench program's figure, or None when that program did not report it."""
    return next((r["value"] for r in records
                 if (r.get("bench"), r.get("name"), r.get("impl")) == (bench, name, impl)), None)


def targets(cfg, table, records):
    """The targets the design sets, each as (target, this run, met?), from this run's figures."""
    rows, me = [], "asyncdispatch"
    cases = [f"{c}x{s}" for c, s in cfg["cases"]] if table else []

    def echo(case, server, key):
        return (table.get((case, server)) or {}).get(key)

    def verdict(oks):
        oks = [ok for ok in oks if ok is not None]
        return "-" if not oks else "yes" if all(oks) else f"{sum(oks)} of {len(oks)}"

    if cases:
        ratios = [(echo(c, me, "cpu_us_per_rt"), echo(c, "floor", "cpu_us_per_rt")) for c in cases]
        ratios = [a / b if a is not None and b else None for a, b in ratios]
        rows.append(("echo: server CPU per round trip <= 1.05 x the floor's, every case",
                     ", ".join(fmt(r, ".2f") for r in ratios),
                     verdict([r <= 1.05 if r is not None else None for r in ratios])))
        peers = [p for p in ("libuv", "asio", "nim") if any((c, p) in table for c in cases)]
        lower, oks = [], []
        for c in cases:
            mine = echo(c, me, "cpu_us_per_rt")
            for p in peers:
                theirs = echo(c, p, "cpu_us_per_rt")
                if mine is None or theirs is None:
                    continue
                oks.append(mine < theirs)
                if theirs <= mine:
                    lower.append(f"{p} at {c.replace('x', ' x ')} B ({(theirs / mine - 1) * 100:+.0f}%)")
        rows.append((f"echo: server CPU below {', '.join(peers)} in every case",
                     "lower: " + "; ".join(lower) if lower else "below all in every case",
                     verdict(oks)))
        extra = [(echo(c, me, "syscalls_per_rt"), echo(c, "floor", "syscalls_per_rt")) for c in cases]
        extra = [a - b if a is not None and b is not None else None for a, b in extra]
        rows.append(("system calls per round trip <= the floor's + 0.1",
                     ", ".join(fmt(e, "+.2f") for e in extra),
                     verdict([e <= 0.1 if e is not None else None for e in extra])))
        ctl = [echo(c, me, "epoll_ctl_per_rt") for c in cases]
        rows.append(("no `epoll_ctl` per message", ", ".join(fmt(v, ".2f") for v in ctl),
                     verdict([v < 0.01 if v is not None else None for v in ctl])))

    def micro(what, name, limit, unit):
        impls = sorted({r["impl"] for r in records if r.get("bench") == "micro"
                        and r.get("name") == name and r["impl"].startswith(me)})
        values = [(i, figure(records, "micro", name, i)) for i in impls]
        if values:
            rows.append((what, "; ".join(f"{v:.4g} {unit} ({i})" for i, v in values),
                         "; ".join(f"{i}: {'yes' if v <= limit else 'no'}" for i, v in values)))

    micro("`co_await` of a finished future <= 2 ns", "co_await finished future", 2, "ns")
    micro("a synchronous coroutine call <= 10 ns", "co_await immediate coroutine", 10, "ns")
    micro("a synchronous coroutine call: <= 1 allocation", "allocations per coroutine call", 1,
          "allocs")
    micro("`callSoon` round trip <= 30 ns", "callSoon round trip", 30, "ns")
    micro("`co_await recv(fd, 16384)` by its only owner: no allocation beyond the string's own",
          "co_await recv of 16 KiB: allocations", 1, "allocs")
    micro("`co_await recv(fd, 16384)` by its only owner: no payload copy (under 1 KiB beyond "
          "the payload; a copy is 16 KiB)",
          "co_await recv of 16 KiB: heap bytes beyond the payload", 1024, "bytes")
    last, rss = figure(records, "timers", "time to last fire", me), \
        figure(records, "timers", "peak RSS", me)
    if last is not None and rss is not None:
        rows.append(("1M timers: last fire <= 1.1 s, peak RSS <= 100 MB",
                     f"{last:.3f} s, {rss:.1f} MB",
                     f"time: {'yes' if last <= 1.1 else 'no'}; RSS: {'yes' if rss <= 100 else 'no'}"))
    idle = figure(records, "idle", "bytes per idle connection waiting in recv(4096)", me)
    if idle is not None:
        rows.append(("an idle connection in `recv(fd, 4096)` <= 512 bytes", f"{idle:.0f} bytes",
                     "yes" if idle <= 512 else "no"))
    return rows


def bench_page(env, cfg, servers, table, records, protocols):
    """docs/bench.md: what was measured and how, the tables, the targets and the chart."""
    out = ["# Benchmarks", "",
           f"Written by `make bench` (a full run) on a {machine_class(env)}; "
           "`make bench-quick` leaves this page alone.", "",
           "The echo servers of this library, libuv, libev, libevent, standalone asio (C++20 "
           "coroutines), Nim's asyncdispatch (`-d:release -d:danger`) and a hand-written "
           "level-triggered epoll loop in C (the floor) run side by side, from Debian's "
           "packages, which `make bench` installs. In each case N connections each send an "
           "S-byte message and wait for all of it to come back (`tools/bench/loadgen.cpp`), "
           f"for {cfg['duration']} s after a {cfg['warmup']} s warm-up; the server runs on CPU 0 "
           "and the load generator on CPU 1; every server runs in turn, in an order rotated at "
           f"each of {cfg['reps']} repetitions, and the tables give the medians. Server CPU per "
           "round trip (from `/proc/PID/stat` around the measured window) is the figure to trust "
           "when the load generator is the bottleneck. System calls per round trip come from one "
           "more run under `strace -f -c`, which slows the server: only its counts are used.",
           "",
           "The micro-benchmarks (`tools/bench/micro/`) are the best of five; allocations are "
           "calls of the global `operator new`. A `co_await recv` of 16 KiB counts them and the "
           "bytes they ask for beyond the received string's own buffer, where a copy of the "
           "payload would show as 16,385 bytes; asio's reads into a string made for each "
           "message. The timers bench (`tools/bench/timers/`) "
           "schedules one million timers with random delays up to 1 s; the idle bench "
           "(`tools/bench/idle/`) holds 10,000 connections each waiting in `recv(fd, 4096)`.",
           "", "Versions: " + ", ".join(v if v.startswith(k) else f"{k} {v}"
                                         for k, v in env["versions"].items()) + ".", ""]
    out += result_tables(cfg, servers, table, records)
    for section in protocols.values():
        out += section["markdown"] + [""]
    rows = targets(cfg, table, records)
    if rows:
        out += ["## Targets", "", "| target | this run | met? |", "|---|---|---|"]
        out += [f"| {t} | {v} | {ok} |" for t, v, ok in rows] + [""]
    out += ["## Chart", "", "![Server CPU time per round trip, by case and server]"
            "(bench/cpu_per_rt.svg)", ""]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def split_sections(text):
    """A page as its preamble and its '## ' sections, each a (heading, lines) pair, in order."""
    head, parts = [], []
    for line in text.splitlines():
        if line.startswith("## "):
            parts.append((line, []))
        (parts[-1][1] if parts else head).append(line)
    return head, parts


def refresh_page(new_lines, parts_run, date):
    """A partial full-length run (--only) replaces the sections it measured in docs/bench.md and
    keeps the others; each replaced section says when and how it was measured."""
    if not os.path.exists(DOCS_PAGE):
        return False
    with open(DOCS_PAGE) as f:
        head, parts = split_sections(f.read())
    _, fresh = split_sections("\n".join(new_lines))
    stamp = (f"Measured alone on {date[:10]} (`make bench BENCH_ONLY=\"{' '.join(parts_run)}\"`), "
             "with the setup above.")
    for heading, lines in fresh:
        while lines and not lines[-1]:
            lines.pop()
        lines[1:1] = ["", stamp]
        lines.append("")
        at = next((i for i, (h, _) in enumerate(parts) if h == heading), None)
        if at is None:
            at = next((i for i, (h, _) in enumerate(parts) if h in ("## Targets", "## Chart")),
                      len(parts))
            parts.insert(at, (heading, lines))
        else:
            parts[at] = (heading, lines)
    with open(DOCS_PAGE, "w") as f:
        f.write("\n".join(head + [line for _, lines in parts for line in lines]).rstrip() + "\n")
    return True


def chart(cfg, servers, table):
    """Clustered bars of server CPU per round trip, drawn by gnuplot when it is installed."""
    if os.path.exists(f"{OUT}/cpu_per_rt.svg"):
        os.remove(f"{OUT}/cpu_per_rt.svg")
    if not shutil.which("gnuplot"):
        note("gnuplot is missing: no chart (apt-get install gnuplot-nox)")
        return
    with open(f"{OUT}/cpu_per_rt.dat", "w") as f:
        f.write("case " + " ".join(servers) + "\n")
        for conns, size in cfg["cases"]:
            values = [table[f"{conns}x{size}", s]["cpu_us_per_rt"] for s in servers]
            label = f"{size // 1024}K" if size >= 1024 and size % 1024 == 0 else size
            f.write(f'"{conns} × {label}" ' + " ".join(fmt(v, ".4f") for v in values) + "\n")
    script = f"""set encoding utf8
set terminal svg size 1000,480 dynamic font 'sans,11'
set output '{OUT}/cpu_per_rt.svg'
set title 'Server CPU time per echo round trip (lower is better)'
set xlabel 'connections × message bytes'
set ylabel 'µs per round trip'
set datafile missing '-'
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set key outside right top
set grid ytics
set yrange [0:*]
plot for [i=2:{len(servers) + 1}] '{OUT}/cpu_per_rt.dat' using i:xtic(1) title columnheader(i)
"""
    try:
        done = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True,
                              timeout=30)
        if done.returncode != 0:
            note(f"gnuplot failed: {done.stderr.strip()[:200]}")
    except subprocess.TimeoutExpired:
        note("gnuplot timed out: no chart")


def main():
    """Runs what can run, reports what could not, and fails only when nothing ran."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="one case, short runs (~2 min)")
    args.add_argument("--case", action="append", default=[], metavar="CONNSxBYTES",
                      help="only this echo case, e.g. 1000x64 (repeatable; with --quick's runs)")
    args.add_argument("--only", action="append", default=[], metavar="PART",
                      help="only this part: echo, programs, or a protocol bench (http, resp); "
                      "repeatable; without --quick it replaces those parts of docs/bench.md")
    parsed = args.parse_args()
    only = set(parsed.only)
    quick = parsed.quick or bool(parsed.case)
    cfg, mode = (QUICK, "quick") if quick else (FULL, "full")
    if parsed.case:
        cfg = dict(cfg, cases=[tuple(int(n) for n in c.split("x")) for c in parsed.case])
    deadline = time.monotonic() + cfg["budget"]
    os.makedirs(f"{OUT}/logs", exist_ok=True)
    env = environment()
    print(f"bench ({mode}): {env['machine']['cpu']}, {env['machine']['nproc']} CPUs", flush=True)

    servers = [s for s in SERVERS if os.access(SERVERS[s], os.X_OK)]
    for s in SERVERS:
        if s not in servers:
            note(f"server {s} skipped: {SERVERS[s]} is not built")
    pin = ("0", "1") if (os.cpu_count() or 1) > 1 else ("0", "0")
    if pin[1] == "0":
        note("one CPU only: server and load generator share it")
    runs, table = [], {}
    if not os.access(LOADGEN, os.X_OK):
        note(f"{LOADGEN} is not built: no echo runs")
    elif servers and (not only or "echo" in only):
        print("echo servers:", ", ".join(servers), flush=True)
        runs = run_servers(cfg, servers, pin)
        table = summarize(runs, cfg["cases"], servers)
    print("bench programs:", flush=True)
    records = run_programs(cfg, quick, deadline) if not only or "programs" in only else []
    protocols = run_protocols(quick, pin, only - {"echo", "programs"} if only else set())

    if table:
        chart(cfg, servers, table)
    report = markdown(env, cfg, servers, table, records, mode, protocols)
    with open(f"{OUT}/results.md", "w") as f:
        f.write(report)
    with open(f"{OUT}/results.json", "w") as f:
        json.dump(dict(env, mode=mode, config=cfg, servers=servers, runs=runs,
                       summary=[dict(case=c, server=s, **v) for (c, s), v in table.items()],
                       bench=records, protocols={n: p["data"] for n, p in protocols.items()},
                       notes=notes), f, indent=1)
    wrote = [f"{OUT}/results.md", f"{OUT}/results.json"]
    if os.path.exists(f"{OUT}/cpu_per_rt.svg"):
        wrote.append(f"{OUT}/cpu_per_rt.svg")
    # Only a full run speaks for the library: a quick one would replace its figures with one case.
    if not quick and not only and table:
        with open(DOCS_PAGE, "w") as f:
            f.write(bench_page(env, cfg, servers, table, records, protocols))
        wrote.append(DOCS_PAGE)
        if os.path.exists(f"{OUT}/cpu_per_rt.svg"):
            os.makedirs(os.path.dirname(DOCS_CHART), exist_ok=True)
            shutil.copyfile(f"{OUT}/cpu_per_rt.svg", DOCS_CHART)
            wrote.append(DOCS_CHART)
    elif not quick and only:
        fresh = result_tables(cfg, servers, table, records)
        for section in protocols.values():
            fresh += section["markdown"] + [""]
        if refresh_page(fresh, sorted(only), env["date"]):
            wrote.append(f"{DOCS_PAGE} (the parts that ran)")
    print("\n" + report)
    print("wrote " + ", ".join(wrote))
    ran = any("failed" not in r for r in runs) or records or protocols
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
