"""Summaries of ops/bench/cluster.sh's load-tool reports (JSON), printed as markdown.

  cluster_summary.py rates DIR RATE...     durable latency per rate, median over the runs
  cluster_summary.py step REPORT RATE      one step of the sustained-rate search; exit 1 when it fell short
  cluster_summary.py broadcast DIR         broadcast across the nodes, median over the runs
  cluster_summary.py budget DIR RATE...    CPU per delivered message of each part, median over the runs
  cluster_summary.py cpu PART=PID,PID...   CPU seconds so far of each part's processes (for cluster.sh)
"""
import glob
import json
import statistics
import sys

med = statistics.median


def load(pattern):
    return [json.load(open(p)) for p in sorted(glob.glob(pattern))]


def lost(r):
    return r["durable"]["loss"]["lost"]


def sustained(r, rate):
    """Why a run did not sustain its rate, or None when it did."""
    p = r["publish"]
    lat = r["latency"].get("durable", {}).get("summary", {})
    if not r["passed"]:
        return "failed: " + "; ".join(r["failures"])
    if p["achieved_rate"] < 0.98 * rate:
        return f"publisher reached {p['achieved_rate']:.0f}/s"
    if p["errors"] or p["refused"] or lost(r):
        return f"errors {p['errors']}, refused {p['refused']}, lost {lost(r)}"
    if lat.get("p99_ms", 0) > 1000:
        return f"p99 {lat['p99_ms']:.0f} ms: deliveries fall behind"
    return None


def cpu(r):
    return sum(g["cpu_seconds"] for g in r["gateways"])


def rates(directory, *rates):
    print("| durable rate (asked) | achieved | p50 | p99 | max | lost | gateway CPU (3 nodes) | runs (p99) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for rate in rates:
        runs = load(f"{directory}/rate-{rate}-run*.json")
        lat = [r["latency"]["durable"]["summary"] for r in runs]
        secs = [r["publish"]["seconds"] for r in runs]
        print(
            f"| {int(rate):,}/s | {med(r['publish']['achieved_rate'] for r in runs):,.0f}/s"
            f" | {med(x['p50_ms'] for x in lat):.2f} ms | **{med(x['p99_ms'] for x in lat):.2f} ms**"
            f" | {med(x['max_ms'] for x in lat):.1f} ms | {sum(lost(r) for r in runs)}"
            f" | {med(cpu(r) / s * 100 for r, s in zip(runs, secs)):.0f} %"
            f" | {' · '.join('%.2f' % x['p99_ms'] for x in lat)} |"
        )
        for r in runs:
            why = sustained(r, float(rate))
            if why:
                print(f"|  | run {r['run_id']}: {why} | | | | | | |")


def step(report, rate):
    r = json.load(open(report))
    lat = r["latency"].get("durable", {}).get("summary", {})
    why = sustained(r, float(rate))
    print(
        f"| {int(rate):,}/s | {r['publish']['achieved_rate']:,.0f}/s | {lat.get('p50_ms', 0):.2f} ms"
        f" | {lat.get('p99_ms', 0):.2f} ms | {lost(r)} | {why or 'sustained'} |"
    )
    sys.exit(1 if why else 0)


def broadcast(directory):
    runs = load(f"{directory}/broadcast-run*.json")
    per_run = []
    for r in runs:
        b = r["broadcasts"]
        per_run.append(
            (
                med(x["latency"]["p50_ms"] for x in b),
                med(x["latency"]["p99_ms"] for x in b),
                med(x["latency"]["max_ms"] for x in b),
                med(x["cpu_us_per_frame"] for x in b),
                all(x["delivered"] == x["expected"] for x in b),
            )
        )
    print("| sessions (3 nodes) | p50 | p99 | last delivery | gateway CPU per delivered frame | all delivered | runs (p99) |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | --- |")
    print(
        f"| {runs[0]['requested']:,} | {med(x[0] for x in per_run):.1f} ms | **{med(x[1] for x in per_run):.1f} ms**"
        f" | {med(x[2] for x in per_run):.1f} ms | {med(x[3] for x in per_run):.1f} µs"
        f" | {all(x[4] for x in per_run)} | {' · '.join('%.1f' % x[1] for x in per_run)} |"
    )


def cpu_seconds(pid):
    """User plus system CPU of a process, in seconds (0 when it is gone)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / 100.0


def cpu_now(*parts):
    words = []
    for part in parts:
        name, _, pids = part.partition("=")
        words.append(f"{name}={sum(cpu_seconds(p) for p in pids.split(',') if p):.2f}")
    print(" ".join(words))


def spent(path):
    """CPU seconds each part spent during a run, from its .cpu file."""
    snap = {}
    for line in open(path):
        label, *words = line.split()
        snap[label] = {k: float(v) for k, v in (w.split("=") for w in words)}
    after, before = snap["after"], snap["before"]
    return {k: after[k] - before.get(k, 0.0) for k in after}


def budget(directory, *rates):
    parts = ["rabbitmq", "dispatchers", "mariadb", "redis", "gateways", "loadtool"]
    names = {"rabbitmq": "RabbitMQ", "dispatchers": "dispatchers (2)", "mariadb": "MariaDB", "redis": "Redis",
             "gateways": "gateways (3)", "loadtool": "load tool"}
    print("CPU time per delivered durable message (µs), by part; and the cores the run kept busy:")
    print()
    print("| durable rate | " + " | ".join(names[p] for p in parts) + " | all | cores busy |")
    print("| ---: | " + " | ".join("---:" for _ in parts) + " | ---: | ---: |")
    for rate in rates:
        rows = []
        for path in sorted(glob.glob(f"{directory}/rate-{rate}-run*.json")):
            r = json.load(open(path))
            used = spent(path[: -len(".json")] + ".cpu")
            delivered = max(r["durable"]["received_in_order"], 1)
            wall = r["publish"]["seconds"]
            rows.append(({p: used.get(p, 0.0) * 1e6 / delivered for p in parts}, sum(used.values()) / wall))
        if not rows:
            continue
        per = {p: med(x[0][p] for x in rows) for p in parts}
        print(f"| {int(rate):,}/s | " + " | ".join(f"{per[p]:.0f}" for p in parts)
              + f" | **{sum(per.values()):.0f}** | {med(x[1] for x in rows):.2f} |")


if __name__ == "__main__":
    {"rates": rates, "step": step, "broadcast": broadcast, "budget": budget, "cpu": cpu_now}[sys.argv[1]](*sys.argv[2:])
