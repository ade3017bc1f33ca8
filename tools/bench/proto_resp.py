"""The RESP bench (`run.py --only resp`): tools/examples/resp_server against redis-server, whose
event loop (ae) is this library's anchor, under redis-benchmark -t ping,set,get at -P 1 and
-P 16. Both servers run pinned to one CPU (pin[0]), redis-benchmark to the other (pin[1]); each
server's CPU time is read from /proc/PID/stat around each test, which redis-benchmark runs on
its own, so every test gets its own CPU per request. Servers run in turn, the order rotated at each repetition; the
table gives the medians.
"""
import csv
import os
import shutil
import signal
import socket
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "build/bench")
RESP_SERVER = os.path.join(ROOT, "build/bin/resp_server")
SERVERS = ("resp_server", "redis-server")
TESTS = ("PING_INLINE", "PING_MBULK", "SET", "GET")
PIPELINES = (1, 16)
CLIENTS = 50
# Requests per test: a few seconds each on a 2-core VM for redis-server.
FULL = dict(reps=3, requests={1: 200_000, 16: 2_000_000})
QUICK = dict(reps=1, requests={1: 50_000, 16: 500_000})

# What callgrind and strace showed when this bench was written; redo them (the commands are in
# the text) when resp_server or the library's hot path changes, as this text does not rerun.
PROFILE_NOTE = (
    "Profile (callgrind, 200,000 GETs at -P 16 with 50 clients, when this bench was written): "
    "resp_server runs about 890 user-space instructions per request and redis-server about "
    "3,060, while the system calls are the same for both (`strace -f -c`: one read and one "
    "write per batch of requests, `epoll_ctl` only when a connection opens). In resp_server the "
    "RESP parser is about 56% of its instructions, the loop's way from a readiness report to the "
    "resumed coroutine (`processEvent`, `processBasicCallbacks`, re-arming the read for the next "
    "`recvInto`) about a fifth, and the key table 11%; in redis-server, `processCommand` and `call` "
    "are about 48% and `processMultibulkBuffer` 28%, with an object allocated for each argument. "
    "So at -P 1, where the kernel's share dominates, the two are close, and at -P 16 resp_server's "
    "lighter user-space part shows as less CPU per request; where its requests/s fall behind "
    "with no more CPU per request, the server is not what limits the run.")


def fresh_port():
    """A port nobody holds: bound once here to be sure, then given to a server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime+stime of a process, all its threads; the fields after the last ')' skip its name."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answers_ping(port, deadline):
    """True once the server answers PING on port, before the deadline."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start(name, pin, log):
    """One server pinned to pin[0]; returns (process, port), or None if it did not answer."""
    port = fresh_port()
    if name == "resp_server":
        cmd = [RESP_SERVER, str(port)]
        cwd = ROOT
    else:
        # Persistence off and one I/O thread: the loop alone, as resp_server runs it.
        cwd = os.path.join(OUT, "redis")
        os.makedirs(cwd, exist_ok=True)
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--io-threads", "1", "--daemonize", "no", "--dir", cwd]
    proc = subprocess.Popen(["taskset", "-c", pin[0]] + cmd, cwd=cwd, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    if answers_ping(port, time.monotonic() + 10):
        return proc, port
    stop(proc)
    return None


def stop(proc):
    """Ends a server for sure: SIGTERM first (both exit on it), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench(proc, port, pipeline, requests, pin, log):
    """{test: {rps, cpu_us}}: one redis-benchmark run per test (-t ping_inline, ping_mbulk, set,
    get: -t ping,set,get one at a time), with the server's CPU time read around each."""
    results = {}
    for test in TESTS:
        cmd = ["taskset", "-c", pin[1], "redis-benchmark", "-p", str(port), "-c", str(CLIENTS),
               "-n", str(requests), "-P", str(pipeline), "-t", test.lower(), "--csv"]
        before = cpu_seconds(proc.pid)
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                 stdin=subprocess.DEVNULL, timeout=300).stdout
        except subprocess.TimeoutExpired:
            continue
        cpu = cpu_seconds(proc.pid) - before
        for row in csv.reader(out.splitlines()):
            if len(row) >= 2 and row[0] == test:
                results[test] = dict(rps=float(row[1]), cpu_us=cpu / requests * 1e6)
    return results


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, digits=0):
    return "–" if value is None else f"{value:,.{digits}f}"


def run(quick, pin, note):
    """The section: {"markdown": [lines], "data": {...}}, or a note and an empty section."""
    cfg = QUICK if quick else FULL
    missing = [p for p in ("redis-server", "redis-benchmark", "taskset") if not shutil.which(p)]
    if missing and os.geteuid() == 0:
        subprocess.run(["sh", os.path.join(ROOT, "tools/install.sh"), "bench"], check=False)
        missing = [p for p in missing if not shutil.which(p)]
    if missing or not os.path.exists(RESP_SERVER):
        note(f"resp bench skipped: missing {', '.join(missing) or RESP_SERVER} "
             "(sh tools/install.sh bench; make)")
        return {"markdown": [], "data": {"skipped": missing or [RESP_SERVER]}}

    os.makedirs(os.path.join(OUT, "logs"), exist_ok=True)
    logs = {n: open(os.path.join(OUT, "logs", f"resp_{n}.log"), "w") for n in SERVERS}
    runs, order = [], list(SERVERS)
    try:
        for rep in range(cfg["reps"]):
            for pipeline in PIPELINES:
                for name in order:
                    started = start(name, pin, logs[name])
                    if started is None:
                        note(f"resp bench: {name} did not answer PING (see build/bench/logs)")
                        continue
                    proc, port = started
                    try:
                        results = bench(proc, port, pipeline, cfg["requests"][pipeline], pin,
                                        logs[name])
                    finally:
                        stop(proc)
                    if proc.returncode not in (0, -signal.SIGTERM):
                        note(f"resp bench: {name} exited with {proc.returncode} after SIGTERM")
                    for test, r in results.items():
                        runs.append(dict(rep=rep, server=name, pipeline=pipeline, test=test, **r))
                    print(f"resp: rep {rep} -P {pipeline} {name}: " + ", ".join(
                        f"{t} {r['rps']:,.0f}/s {r['cpu_us']:.2f} us" for t, r in results.items()),
                        flush=True)
            order = order[1:] + order[:1]
    finally:
        for f in logs.values():
            f.close()

    summary = []
    for pipeline in PIPELINES:
        for test in TESTS:
            row = dict(pipeline=pipeline, test=test)
            for name in SERVERS:
                got = [r for r in runs if (r["server"], r["pipeline"], r["test"]) ==
                       (name, pipeline, test)]
                row[name] = dict(
                    rps=statistics.median(r["rps"] for r in got) if got else None,
                    cpu_us=statistics.median(r["cpu_us"] for r in got) if got else None)
            row["rps_ratio"] = ratio(row["resp_server"]["rps"], row["redis-server"]["rps"])
            row["cpu_ratio"] = ratio(row["resp_server"]["cpu_us"], row["redis-server"]["cpu_us"])
            summary.append(row)

    md = ["## RESP: resp_server vs redis-server", "",
          "`tools/examples/resp_server.cpp` (one dispatcher, one coroutine per connection) and "
          f"Debian's `redis-server` ({version()}, persistence off, one I/O thread) each pinned to "
          f"CPU {pin[0]}, under `redis-benchmark -t ping,set,get -c {CLIENTS}` pinned to CPU "
          f"{pin[1]}, without and with pipelining (`-P 1`: {cfg['requests'][1]:,} requests per "
          f"test; `-P 16`: {cfg['requests'][16]:,}); medians of {cfg['reps']} run(s), the order "
          "rotated. Server CPU per request is `/proc/PID/stat` (user + system, every thread) "
          "over the test; the ratios are resp_server's figure over redis-server's, so above 1 is "
          "better for requests/s and worse for CPU.", "",
          "| test | -P | resp_server req/s | redis-server req/s | req/s ratio "
          "| resp_server CPU µs/req | redis-server CPU µs/req | CPU ratio |",
          "|---|---|---|---|---|---|---|---|"]
    for row in summary:
        a, b = row["resp_server"], row["redis-server"]
        md.append(f"| {row['test']} | {row['pipeline']} | {fmt(a['rps'])} | {fmt(b['rps'])} | "
                  f"{fmt(row['rps_ratio'], 2)} | {fmt(a['cpu_us'], 2)} | {fmt(b['cpu_us'], 2)} | "
                  f"{fmt(row['cpu_ratio'], 2)} |")
    md += ["", standing(summary)]
    if PROFILE_NOTE:
        md += ["", PROFILE_NOTE]
    return {"markdown": md, "data": dict(config=dict(cfg, clients=CLIENTS, pin=list(pin)),
                                         runs=runs, summary=summary)}


def version():
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        return next((w for w in out.split() if w.startswith("v=")), "v=?")[2:]
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def standing(summary):
    """One sentence: where resp_server stands against redis-server in this run."""
    parts = []
    for pipeline in PIPELINES:
        rows = [r for r in summary if r["pipeline"] == pipeline and r["rps_ratio"]]
        cpu = [r["cpu_ratio"] for r in rows if r["cpu_ratio"]]
        if not rows:
            continue
        lo, hi = min(r["rps_ratio"] for r in rows), max(r["rps_ratio"] for r in rows)
        text = f"at -P {pipeline} resp_server serves {lo:.2f}–{hi:.2f}× redis-server's requests/s"
        if cpu:
            text += f" for {min(cpu):.2f}–{max(cpu):.2f}× its CPU per request"
        parts.append(text)
    return ("In this run, " + "; ".join(parts) + ".") if parts else "No figures: see the notes."
