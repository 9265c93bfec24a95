#!/usr/bin/env bash
# Run the Autobahn|Testsuite (wstest -m fuzzingclient) against a WebSocket echo
# endpoint and fail if any case of a gated section FAILED.  See README.md.
#
#   ops/conformance/run.sh ws://127.0.0.1:PORT/echo [options]
#
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
SUITE_VERSION="25.10.1"
CACHE="${PUSHGATE_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pushgate-conformance}"

CORE_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*"
DEFLATE_CASES="12.*,13.*"
LIMIT_CASES="9.*"

usage() {
  cat <<EOF
usage: $(basename "$0") URL [options]
       $(basename "$0") --install-only

Runs Autobahn|Testsuite $SUITE_VERSION (wstest -m fuzzingclient) against URL, a ws://
(or wss://) echo endpoint, e.g. ws://127.0.0.1:9001/echo.

options:
  --cases LIST      comma-separated case patterns to run, e.g. '1.*,2.*,7.1.5'
                    (default: $CORE_CASES,$DEFLATE_CASES)
  --exclude LIST    comma-separated case patterns to leave out
  --with-limits     also run section 9 (limits/performance: messages up to 16 MiB,
                    up to 100 s per case on a slow server); ignored with --cases
  --no-deflate      do not run sections 12/13 (permessage-deflate)
  --gate LIST       sections whose FAILED, MISSING or BADCLOSE cases fail the run
                    (default: 1,2,3,4,5,6,7,9,10; 12/13 are reported only)
  --ignore-close    do not gate on BADCLOSE (cases whose verdict passed but whose
                    closing behaviour the suite marks red); see README
  --out DIR         report directory (default: <repo>/target/conformance): the
                    suite's own HTML+JSON report of each section goes to
                    DIR/report/<section>/; DIR/index.html links them, DIR/index.json
                    has all cases, DIR/summary.{txt,json} is the summary below
  --agent NAME      name of the server in the report (default: pushgate)
  --wait SECS       wait up to SECS for the URL's TCP port to accept (default: 10)
  --timeout SECS    time limit of each section's wstest run (default: 900 s, 3600 s
                    for section 9); a section over it is reported as MISSING
  --install-only    only install the suite into the cache, then exit
  -v, --verbose     stream wstest's output instead of only logging it
  -h, --help        this help

environment:
  PUSHGATE_CONFORMANCE_CACHE  install cache (default: \${XDG_CACHE_HOME:-\$HOME/.cache}/pushgate-conformance)
  PUSHGATE_PYTHON2            a CPython 2.7 interpreter to use (default: searched, see README)

exit status: 0 all gated cases passed; 1 a gated case is FAILED, BADCLOSE or
missing from the report; 2 usage, install or connection problem.
EOF
}

die() { echo "run.sh: $*" >&2; exit 2; }
log() { echo "run.sh: $*" >&2; }

URL=""
CASES=""
EXCLUDE=""
WITH_LIMITS=0
NO_DEFLATE=0
GATE="1,2,3,4,5,6,7,9,10"
IGNORE_CLOSE=""
OUT=""
AGENT="pushgate"
WAIT=10
TIMEOUT=""
INSTALL_ONLY=0
VERBOSE=0

while [ $# -gt 0 ]; do
  case "$1" in
    --cases) [ $# -ge 2 ] || die "--cases needs a value"; CASES="$2"; shift 2 ;;
    --cases=*) CASES="${1#*=}"; shift ;;
    --exclude) [ $# -ge 2 ] || die "--exclude needs a value"; EXCLUDE="$2"; shift 2 ;;
    --exclude=*) EXCLUDE="${1#*=}"; shift ;;
    --with-limits) WITH_LIMITS=1; shift ;;
    --no-deflate) NO_DEFLATE=1; shift ;;
    --gate) [ $# -ge 2 ] || die "--gate needs a value"; GATE="$2"; shift 2 ;;
    --gate=*) GATE="${1#*=}"; shift ;;
    --ignore-close) IGNORE_CLOSE="--ignore-close"; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --agent) [ $# -ge 2 ] || die "--agent needs a value"; AGENT="$2"; shift 2 ;;
    --agent=*) AGENT="${1#*=}"; shift ;;
    --wait) [ $# -ge 2 ] || die "--wait needs a value"; WAIT="$2"; shift 2 ;;
    --wait=*) WAIT="${1#*=}"; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; TIMEOUT="$2"; shift 2 ;;
    --timeout=*) TIMEOUT="${1#*=}"; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -v|--verbose) VERBOSE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [ -z "$URL" ] || die "only one URL, got '$URL' and '$1'"; URL="$1"; shift ;;
  esac
done

if [ "$INSTALL_ONLY" = 0 ]; then
  [ -n "$URL" ] || { usage >&2; die "missing URL"; }
  case "$URL" in ws://*|wss://*) ;; *) die "URL must start with ws:// or wss://: $URL" ;; esac
fi
case "$WAIT" in ''|*[!0-9]*) die "--wait must be whole seconds" ;; esac
case "${TIMEOUT:-0}" in *[!0-9]*) die "--timeout must be whole seconds" ;; esac
case "$AGENT" in ''|*[!A-Za-z0-9._-]*) die "--agent may use only letters, digits, . _ -" ;; esac

PYTHON3="$(command -v python3 || true)"
[ -n "$PYTHON3" ] || die "python3 not found"

# ---------------------------------------------------------------- python 2.7 ---
# The suite is Python-2.7-only (see README).  Find a CPython 2.7 with ssl+zlib.
is_py27() {
  [ -n "$1" ] && "$1" -c 'import sys, ssl, zlib; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1
}

find_py27() {
  local c root
  if [ -n "${PUSHGATE_PYTHON2:-}" ]; then
    if is_py27 "$PUSHGATE_PYTHON2"; then echo "$PUSHGATE_PYTHON2"; return 0; fi
    log "PUSHGATE_PYTHON2=$PUSHGATE_PYTHON2 is not a working CPython 2.7 (with ssl and zlib)"
    return 1
  fi
  # pyenv-managed interpreters (this project's machine image ships pyenv's 2.7.18)
  for root in "${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv /opt/pyenv /usr/local/pyenv; do
    [ -n "$root" ] && [ -d "$root/versions" ] || continue
    for c in $(ls -d "$root"/versions/2.7* 2>/dev/null | sort -rV); do
      if is_py27 "$c/bin/python2.7"; then echo "$c/bin/python2.7"; return; fi
    done
  done
  # anything on PATH or in the usual prefixes (pyenv shims fail is_py27 unless selected)
  for c in "$(command -v python2.7 || true)" "$(command -v python2 || true)" \
           /usr/local/bin/python2.7 /usr/bin/python2.7 /opt/python2.7/bin/python2.7; do
    if is_py27 "$c"; then echo "$c"; return; fi
  done
  return 1
}

sha12() { "$PYTHON3" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:12])' "$1"; }

# ------------------------------------------------------------------- install ---
install_suite() {
  mkdir -p "$CACHE"
  local tools_dir="$CACHE/tools-$(sha12 "$HERE/requirements-tools.lock")"
  SUITE_DIR="$CACHE/autobahntestsuite-$SUITE_VERSION-py27-$(sha12 "$HERE/requirements-py27.lock")"
  if [ -f "$SUITE_DIR/.installed-ok" ] && [ -x "$SUITE_DIR/bin/wstest" ] && is_py27 "$SUITE_DIR/bin/python"; then
    return 0
  fi

  # one installer at a time per cache
  exec 9>"$CACHE/.install.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if [ -f "$SUITE_DIR/.installed-ok" ] && [ -x "$SUITE_DIR/bin/wstest" ] && is_py27 "$SUITE_DIR/bin/python"; then
    return 0
  fi

  local py27
  py27="$(find_py27)" || die "no usable CPython 2.7 interpreter. The Autobahn|Testsuite runs only on
  Python 2.7; set PUSHGATE_PYTHON2=/path/to/python2.7 (it needs the ssl and zlib modules).
  See ops/conformance/README.md, 'How it is made to run here'."
  log "installing Autobahn|Testsuite $SUITE_VERSION into $SUITE_DIR (python: $py27)"

  # 1. virtualenv 20.21.x (the last line able to create 2.7 environments), in a py3 venv
  if [ ! -f "$tools_dir/.installed-ok" ]; then
    rm -rf "$tools_dir"
    "$PYTHON3" -m venv "$tools_dir" || die "python3 -m venv failed"
    "$tools_dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --no-deps -r "$HERE/requirements-tools.lock" \
      || die "installing virtualenv (requirements-tools.lock) failed"
    touch "$tools_dir/.installed-ok"
  fi

  # 2. the suite's venv; only the stamp file written last marks it complete
  rm -rf "$SUITE_DIR"
  "$tools_dir/bin/virtualenv" --quiet --no-periodic-update --app-data "$CACHE/virtualenv-app-data" \
      -p "$py27" "$SUITE_DIR" || die "virtualenv -p $py27 failed"
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore "$SUITE_DIR/bin/python" -m pip install \
      --no-input --no-cache-dir --require-hashes --no-deps \
      -r "$HERE/requirements-py27.lock" >"$SUITE_DIR/pip-install.log" 2>&1; then
    grep -v DEPRECATION "$SUITE_DIR/pip-install.log" | tail -25 >&2
    die "pip install -r requirements-py27.lock failed (log: $SUITE_DIR/pip-install.log)"
  fi
  "$SUITE_DIR/bin/python" -c 'import autobahntestsuite, autobahn, twisted' >/dev/null 2>&1 \
    || die "installing the suite (requirements-py27.lock) failed"
  [ -x "$SUITE_DIR/bin/wstest" ] || die "wstest missing after install"
  touch "$SUITE_DIR/.installed-ok"
  log "installed: $("$SUITE_DIR/bin/python" -c 'import autobahntestsuite, autobahn; print("autobahntestsuite %s, autobahn %s" % (autobahntestsuite.version, autobahn.version))' 2>/dev/null)"
}

SECONDS=0
install_suite
INSTALL_SECS=$SECONDS
if [ "$INSTALL_ONLY" = 1 ]; then
  echo "$SUITE_DIR"
  exit 0
fi

# ----------------------------------------------------------------- the run -----
if [ -z "$CASES" ]; then
  CASES="$CORE_CASES"
  [ "$WITH_LIMITS" = 1 ] && CASES="$CASES,$LIMIT_CASES"
  [ "$NO_DEFLATE" = 1 ] || CASES="$CASES,$DEFLATE_CASES"
fi

if [ -z "$OUT" ]; then OUT="$REPO_ROOT/target/conformance"; fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REPORT="$OUT/report"
rm -rf "$REPORT"
rm -f "$OUT/fuzzingclient.json" "$OUT/expected_cases.json" "$OUT/sections.tsv" \
      "$OUT/summary.txt" "$OUT/summary.json" "$OUT/index.html" "$OUT/index.json"
mkdir -p "$REPORT"

# write_spec FILE OUTDIR CASES EXCLUDE: a fuzzingclient spec, as JSON built by python
write_spec() {
  "$PYTHON3" - "$1" "$URL" "$AGENT" "$2" "$3" "$4" <<'EOF'
import json, sys
out, url, agent, outdir, cases, exclude = sys.argv[1:]
split = lambda s: [p.strip() for p in s.split(",") if p.strip()]
spec = {
    # failByDrop=false is also what wstest's fuzzingclient sets by itself ("spec conformance")
    "options": {"failByDrop": False},
    "outdir": outdir,
    "servers": [{"agent": agent, "url": url}],
    "cases": split(cases),
    "exclude-cases": split(exclude),
    "exclude-agent-cases": {},
}
with open(out, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
EOF
}

# the whole selection, expanded by the suite itself
write_spec "$OUT/fuzzingclient.json" "$REPORT" "$CASES" "$EXCLUDE"
"$SUITE_DIR/bin/python" "$HERE/list_cases.py" "$OUT/fuzzingclient.json" "$OUT/expected_cases.json" \
  || die "bad --cases/--exclude (see above)"

# wait for the server, and check that URL answers a WebSocket handshake with 101
"$PYTHON3" "$HERE/precheck.py" "$URL" "$WAIT" || die "no WebSocket endpoint at $URL (see above)"

# One wstest run per section: the suite keeps results in memory and writes them
# when a run ends, so a section that hangs past its timeout risks only its own
# results (on SIGTERM wstest still writes what it finished), and each section's
# time is measured.  "SECTION<TAB>ID,ID,..." lines:
SECTION_LINES="$("$PYTHON3" - "$OUT/expected_cases.json" <<'EOF'
import json, sys
cases = json.load(open(sys.argv[1]))["cases"]
by = {}
for c in cases:
    by.setdefault(c.split(".")[0], []).append(c)
for s in sorted(by, key=int):
    print("%s\t%s" % (s, ",".join(by[s])))
EOF
)"
NCASES="$("$PYTHON3" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["cases"]))' "$OUT/expected_cases.json")"
log "running $NCASES cases against $URL, one wstest run per section (logs: $REPORT/*/wstest.log)"

printf 'section\tcases\tseconds\tstatus\n' > "$OUT/sections.tsv"
TOTAL_SECONDS=0
while IFS="$(printf '\t')" read -r sec ids; do
  [ -n "$sec" ] || continue
  part="$REPORT/$sec"
  mkdir -p "$part"
  write_spec "$part/fuzzingclient.json" "$part" "$ids" ""
  n=$(( $(printf '%s' "$ids" | tr -cd ',' | wc -c) + 1 ))
  if [ -n "$TIMEOUT" ]; then t="$TIMEOUT"; elif [ "$sec" = 9 ]; then t=3600; else t=900; fi
  printf 'run.sh:   section %-3s %4d cases ... ' "$sec" "$n" >&2
  if ! "$PYTHON3" "$HERE/precheck.py" "$URL" 5 2>"$part/precheck.log"; then
    status="not run: $(head -c 200 "$part/precheck.log" | tr '\n' ' ')"
    echo "** $status **" >&2
    printf '%s\t%s\t%s\t%s\n' "$sec" "$n" 0 "$status" >> "$OUT/sections.tsv"
    continue
  fi
  rm -f "$part/precheck.log"
  SECONDS=0
  set +e
  if [ "$VERBOSE" = 1 ]; then
    echo >&2
    (cd "$part" && timeout -k 10 "$t" "$SUITE_DIR/bin/wstest" -m fuzzingclient -s "$part/fuzzingclient.json") 2>&1 | tee "$part/wstest.log" >&2
    rc=${PIPESTATUS[0]}
  else
    (cd "$part" && timeout -k 10 "$t" "$SUITE_DIR/bin/wstest" -m fuzzingclient -s "$part/fuzzingclient.json") >"$part/wstest.log" 2>&1
    rc=$?
  fi
  set -e
  secs=$SECONDS
  TOTAL_SECONDS=$((TOTAL_SECONDS + secs))
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    last="$(grep -o 'Running test case ID [0-9.]*' "$part/wstest.log" | tail -1 | awk '{print $5}')"
    status="timeout after ${t}s, last case started: ${last:-none}"
  elif [ "$rc" != 0 ]; then
    status="wstest exit status $rc"
  elif [ ! -f "$part/index.json" ]; then
    status="wstest wrote no report"
  elif grep -q '^Connection to .* failed' "$part/wstest.log"; then
    status="lost the server: $(grep -m1 '^Connection to .* failed' "$part/wstest.log" | cut -c1-160)"
  else
    status="ok"
  fi
  if [ "$status" = ok ]; then echo "${secs}s" >&2; else echo "${secs}s  ** $status **" >&2; fi
  if [ "$status" != ok ] && [ "$VERBOSE" = 0 ] && [ -f "$part/wstest.log" ]; then
    tail -3 "$part/wstest.log" | cut -c1-200 | sed 's/^/run.sh:     | /' >&2
  fi
  printf '%s\t%s\t%s\t%s\n' "$sec" "$n" "$secs" "$status" >> "$OUT/sections.tsv"
done <<< "$SECTION_LINES"

set +e
"$PYTHON3" "$HERE/summarize.py" "$REPORT" --expected "$OUT/expected_cases.json" --agent "$AGENT" \
    --gate "$GATE" $IGNORE_CLOSE --sections "$OUT/sections.tsv" --json-out "$OUT/summary.json" \
    --index-out "$OUT" | tee "$OUT/summary.txt"
SUM_RC=${PIPESTATUS[0]}
set -e
echo
echo "report:  $OUT/index.html (links the suite's HTML report of each section, in $REPORT/<section>/)"
echo "json:    $OUT/index.json (all cases), $OUT/summary.json (this summary)"
echo "time:    install/check ${INSTALL_SECS}s, suite ${TOTAL_SECONDS}s"
exit "$SUM_RC"
