"""The HTTP bench (`make bench`, `python3 tools/bench/run.py --only http`): the example server
tools/examples/http_server.cpp against nginx, both serving the same fixed body from memory over
keep-alive connections, each pinned to the same core in turn while wrk runs on the other.

nginx gets a configuration of its own in build/bench/nginx/ (one worker, access_log off, no
server version, keepalive_requests unbounded as the example's are, its pid and temporary files
there, a port nobody holds), so it never touches the system's nginx. Requests per second come
from wrk; server CPU per request from /proc/PID/stat (utime + stime, nginx's master and worker
together) read just before and after each wrk run.
"""
import os
import re
import shutil
import socket
import statistics
import subprocess
import time

from run import OUT, cpu_seconds, fresh_port, stop, wait_for_port

BODY = "Hello, World!\n"  # the same bytes as kBody in tools/examples/http_server.cpp
SERVER = "build/bin/http_server"
NGINX_DIR = f"{OUT}/nginx"
FULL = dict(cases=[(1, 1), (50, 1), (200, 1), (50, 16)], reps=3, duration=4)
QUICK = dict(cases=[(50, 1)], reps=1, duration=2)


def nginx_config(port):
    """A one-worker nginx answering every request with BODY from memory, like the example."""
    root = os.path.abspath(NGINX_DIR)
    body = BODY.replace("\n", "\\n")  # nginx's quoted strings know \n
    temp = "\n".join(f"  {kind}_temp_path {root}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  default_type text/plain;
  keepalive_requests 1000000000;
{temp}
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "{body}"; }}
  }}
}}
"""


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree_cpu(pid):
    """CPU seconds of a process and its children (nginx's master and its worker)."""
    return sum(cpu_seconds(p) for p in [pid] + children(pid))


def fetch(port):
    """One GET /: the whole response, to check the body and to report its size."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def start(name, port, pin, note):
    """Starts one server pinned to pin[0]; returns the process or None."""
    log = open(f"{OUT}/logs/http_{name}.log", "w")
    if name == "http_server":
        cmd = [SERVER, str(port)]
    else:
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(f"{NGINX_DIR}/{kind}", exist_ok=True)
        with open(f"{NGINX_DIR}/nginx.conf", "w") as f:
            f.write(nginx_config(port))
        cmd = ["nginx", "-p", os.path.abspath(NGINX_DIR), "-e", os.path.abspath(
            f"{NGINX_DIR}/error.log"), "-c", os.path.abspath(f"{NGINX_DIR}/nginx.conf")]
    proc = subprocess.Popen(["taskset", "-c", pin[0]] + cmd, stdout=log, stderr=log)
    if not wait_for_port(proc, port):
        note(f"http: {name} did not start (see {OUT}/logs/http_{name}.log)")
        stop(proc)
        return None
    return proc


def wrk_script(depth):
    """A wrk script that sends `depth` pipelined requests per write, or None for plain wrk."""
    if depth == 1:
        return None
    path = f"{OUT}/wrk_pipeline_{depth}.lua"
    with open(path, "w") as f:
        f.write(f"""init = function(args)
  local r = {{}}
  for i = 1, {depth} do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
""")
    return path


def run_wrk(proc, port, conns, depth, duration, pin):
    """One wrk run against a running server; its figures and the server's CPU per request."""
    cmd = ["taskset", "-c", pin[1], "wrk", "-t1", f"-c{conns}", f"-d{duration}s"]
    script = wrk_script(depth)
    if script:
        cmd += ["-s", script]
    cmd.append(f"http://127.0.0.1:{port}/")
    before = tree_cpu(proc.pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    cpu = tree_cpu(proc.pid) - before
    requests = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not requests or not rps:
        return dict(failed=f"wrk gave no result: {out.strip()[-200:]}")
    result = dict(requests=int(requests.group(1)), rps=float(rps.group(1)),
                  cpu_us_per_req=cpu * 1e6 / max(1, int(requests.group(1))))
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        result["socket_errors"] = errors.group(1)
    if non2xx:
        result["non_2xx"] = int(non2xx.group(1))
    return result


def run(quick, pin, note):
    cfg = QUICK if quick else FULL
    section = ["## HTTP: http_server vs nginx", ""]
    missing = [p for p in ("wrk", "nginx") if not shutil.which(p)]
    if missing and os.geteuid() == 0:
        subprocess.run(["sh", "tools/install.sh", "bench"], check=False)
        missing = [p for p in ("wrk", "nginx") if not shutil.which(p)]
    if missing or not os.access(SERVER, os.X_OK):
        why = f"{', '.join(missing)} missing" if missing else f"{SERVER} is not built"
        note(f"http bench skipped: {why} (sh tools/install.sh bench; make)")
        return dict(markdown=section + [f"Skipped: {why}."], data=dict(skipped=why))

    os.makedirs(f"{OUT}/logs", exist_ok=True)
    os.makedirs(NGINX_DIR, exist_ok=True)
    names = ["http_server", "nginx"]
    ports = {n: fresh_port() for n in names}
    procs, sizes, runs = {}, {}, []
    try:
        for n in names:
            procs[n] = start(n, ports[n], pin, note)
            if procs[n] is None:
                return dict(markdown=section + [f"Skipped: {n} did not start."],
                            data=dict(skipped=f"{n} did not start"))
            response = fetch(ports[n])
            header, _, body = response.partition(b"\r\n\r\n")
            if body != BODY.encode():
                note(f"http: {n} answered GET / with {body[:60]!r}, not the fixed body")
            sizes[n] = dict(header=len(header) + 4, body=len(body))
        # Each server warms up once (page faults, the first connections) before any measuring.
        for n in names:
            run_wrk(procs[n], ports[n], 50, 1, 1, pin)
        for conns, depth in cfg["cases"]:
            for rep in range(cfg["reps"]):
                order = names if rep % 2 == 0 else names[::-1]
                for n in order:
                    r = run_wrk(procs[n], ports[n], conns, depth, cfg["duration"], pin)
                    runs.append(dict(r, server=n, connections=conns, pipeline=depth, rep=rep))
                    shown = (f"{r['rps']:>10.0f} req/s {r['cpu_us_per_req']:6.2f} us/req"
                             if "rps" in r else r["failed"])
                    print(f"  http {n:<12} c={conns:<4} pipeline={depth:<3} {shown}", flush=True)
                    for key in ("socket_errors", "non_2xx"):
                        if key in r:
                            note(f"http: {n}, {conns} connections: wrk {key}: {r[key]}")
    finally:
        for p in procs.values():
            if p:
                stop(p)

    def med(n, conns, depth, key):
        vals = [r[key] for r in runs if r["server"] == n and r["connections"] == conns
                and r["pipeline"] == depth and key in r]
        return statistics.median(vals) if vals else None

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    section += [
        f"`wrk -t1 -cN -d{cfg['duration']}s` against `build/bin/http_server` and nginx "
        f"({nginx_version()}: one worker, `access_log off`, `return 200` of the same "
        f"{len(BODY)}-byte body from memory, `keepalive_requests` unbounded), each pinned to CPU "
        f"{pin[0]}, wrk to CPU {pin[1]}; median of {cfg['reps']} run(s), servers alternating. "
        "Server CPU per request is utime + stime from /proc around each run. A pipelined case "
        "sends that many requests per write (a wrk script). A ratio is http_server's figure over "
        "nginx's: above 1 is better for requests/s, below 1 for CPU. Response header bytes: "
        + ", ".join(f"{n} {sizes[n]['header']}" for n in names) + ".", "",
        "| connections | pipeline | http_server req/s | nginx req/s | ratio | "
        "http_server µs CPU/req | nginx µs CPU/req | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    table = []
    for conns, depth in cfg["cases"]:
        a_rps, n_rps = med("http_server", conns, depth, "rps"), med("nginx", conns, depth, "rps")
        a_cpu = med("http_server", conns, depth, "cpu_us_per_req")
        n_cpu = med("nginx", conns, depth, "cpu_us_per_req")
        rps_ratio = a_rps / n_rps if a_rps and n_rps else None
        cpu_ratio = a_cpu / n_cpu if a_cpu and n_cpu else None
        table.append(dict(connections=conns, pipeline=depth, http_server_rps=a_rps,
                          nginx_rps=n_rps, rps_ratio=rps_ratio, http_server_cpu_us=a_cpu,
                          nginx_cpu_us=n_cpu, cpu_ratio=cpu_ratio))
        section.append(f"| {conns} | {depth} | {f(a_rps, ',.0f')} | {f(n_rps, ',.0f')} | "
                       f"{f(rps_ratio, '.2f')} | {f(a_cpu, '.2f')} | {f(n_cpu, '.2f')} | "
                       f"{f(cpu_ratio, '.2f')} |")
    plain = [t for t in table if t["pipeline"] == 1 and t["rps_ratio"] and t["cpu_ratio"]]
    def span(key):
        low, high = min(t[key] for t in plain), max(t[key] for t in plain)
        return f"{low:.2f}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f} to {high:.2f}"

    if plain:
        section += ["", "Where it stands: without pipelining http_server serves "
                    f"{span('rps_ratio')} times nginx's requests per second at "
                    f"{span('cpu_ratio')} times its CPU per request. Both "
                    "make the same system calls per request (one `recvfrom`, one `sendto` or "
                    "`writev`, a share of `epoll_wait`; `strace -c`), so the kernel's TCP work "
                    "is most of either figure; a callgrind profile of http_server puts its own "
                    "user-space work at about 4,300 instructions per request, most of it the "
                    "library's dispatch of the readiness (`processEvent`, the selector's key "
                    "lookups), the rest parsing and formatting. Pipelined, it answers each batch "
                    "of requests with one write, where nginx makes one `writev` per response."]
    return dict(markdown=section, data=dict(sizes=sizes, runs=runs, table=table))


def nginx_version():
    try:
        out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=10).stderr
        return out.strip().split(": ", 1)[-1]
    except (OSError, subprocess.TimeoutExpired):
        return "nginx"
