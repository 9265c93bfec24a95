#!/usr/bin/env python3
"""Where a connect flood's CPU goes: the server's, and the rest of the machine's (the load client).

Starts pushgate (release build, SQLite in a temporary data dir) and uWebSockets.js
(ops/bench/peers/uws-server.js) in turn, floods each with N sessions from the same load client
(`pushgate-loadtest soak`, 2 processes, ramp 40,000/s, 256 connecting at once, no broadcasts),
and samples the machine's CPU (/proc/stat) and the server's (/proc/PID/stat) every 20 ms. Over
the connect phase (the ramp start to the last session open, from the report's
`connect_seconds`, with half a second's margin) it prints per connect: the server's CPU, the rest of the machine's busy time
(the load client, the kernel's work on its behalf), and the handshakes per second.

    python3 ops/bench/connect-cpu.py [SESSIONS=15000] [ROUNDS=3]

Needs `cargo build --release --workspace --bins` and the Node packages of ops/bench/peers
(`ops/bench/peers.sh` installs them). GW_BIN picks another gateway build; GW_BUILDS
(`name=path,name=path`) floods several builds and uWebSockets.js in turn, round by round, e.g. a
build with an experiment patch of ops/bench/patches beside the unpatched one. LT_BIN picks another
load client build.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
TICK = os.sysconf("SC_CLK_TCK")
LOAD_CLIENT = os.environ.get("LT_BIN", os.path.join(ROOT, "target/release/pushgate-loadtest"))


def machine():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def process_cpu(pid):
    """User + system jiffies of one process (every thread)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def wait_for(path, pattern, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.exists(path):
            m = re.search(pattern, open(path).read())
            if m:
                return m
        time.sleep(0.05)
    raise SystemExit(f"no {pattern!r} in {path} within {seconds} s")


def gateway_builds():
    """{name: path} of the gateway builds to flood: GW_BUILDS, else GW_BIN or the release build."""
    listed = os.environ.get("GW_BUILDS")
    if listed:
        return dict(item.split("=", 1) for item in listed.split(","))
    return {"pushgate": os.environ.get("GW_BIN", os.path.join(ROOT, "target/release/pushgate-gateway"))}


def start(server, work):
    out = os.path.join(work, "out")
    builds = gateway_builds()
    if server in builds:
        gw = builds[server]
        data = os.path.join(work, "data")
        proc = subprocess.Popen([gw, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir", data],
                                stdout=open(out, "w"), stderr=open(os.path.join(work, "log"), "w"))
        m = wait_for(out, r"client=(\S+) admin=(\S+)")
        target = ["--url", f"ws://{m.group(1)}/ws", "--admin", f"http://{m.group(2)}",
                  "--secret-file", os.path.join(data, "jwt_secret")]
    else:
        proc = subprocess.Popen(["node", os.path.join(ROOT, "ops/bench/peers/uws-server.js")],
                                stdout=open(out, "w"), stderr=open(os.path.join(work, "log"), "w"))
        m = wait_for(out, r"client=(\S+) publish=(\S+)")
        target = ["--server", "peer", "--url", f"ws://{m.group(1)}/ws", "--peer-publish", m.group(2)]
    return proc, target


def run(server, sessions):
    with tempfile.TemporaryDirectory() as work:
        proc, target = start(server, work)
        report = os.path.join(work, "report.json")
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic(), *machine(), process_cpu(proc.pid)))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        subprocess.run([LOAD_CLIENT, "soak", *target,
                        "--sessions", str(sessions), "--workers", "2", "--ramp-per-s", "40000",
                        "--max-connecting", "256", "--duration", "2s", "--broadcasts", "0",
                        "--gateway-pid", str(proc.pid), "--progress", "none", "--report", report],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        stop.set()
        sampler.join()
        proc.terminate()
        proc.wait(timeout=60)
        r = json.load(open(report))
        if r["opened"] != sessions:
            raise SystemExit(f"{server}: opened {r['opened']} of {sessions}")
        # The samples around the connect phase: the load tool starts its worker processes first,
        # so the ramp starts a little after t0; the window errs on the side of including the
        # quiet moments around it (idle sessions cost next to nothing), not of cutting it short.
        end = t0 + 0.5 + r["connect_seconds"]
        a = max((s for s in samples if s[0] <= t0), key=lambda s: s[0])
        b = min((s for s in samples if s[0] >= end), key=lambda s: s[0])
        us = lambda jiffies: jiffies / TICK / sessions * 1e6
        server_us = us(b[3] - a[3])
        rest_us = us(b[1] - a[1]) - server_us
        return r["handshakes_per_s"], server_us, rest_us


def main():
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 15000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    results = {name: [] for name in [*gateway_builds(), "uws"]}
    for i in range(rounds):
        for server in results:
            hs, server_us, rest_us = run(server, sessions)
            results[server].append((hs, server_us, rest_us))
            print(f"round {i + 1} {server}: {hs:,.0f} handshakes/s, server {server_us:.1f} µs, "
                  f"rest of the machine {rest_us:.1f} µs per connect", flush=True)
    med = statistics.median
    for server, rs in results.items():
        print(f"{server}: median of {rounds}: {med(r[0] for r in rs):,.0f} handshakes/s, server "
              f"{med(r[1] for r in rs):.1f} µs, rest of the machine {med(r[2] for r in rs):.1f} µs per connect")


if __name__ == "__main__":
    main()
