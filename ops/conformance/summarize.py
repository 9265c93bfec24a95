#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite fuzzingclient report and gate on it.

Standard library only (Python >= 3.8).  Reads the suite's own verdicts from
index.json (and the per-case JSON files for the details of failing cases); it
never re-judges a case.

    summarize.py REPORT_DIR [--expected expected_cases.json] [--agent NAME]
                 [--gate 1,2,3,4,5,6,7,9,10] [--ignore-close]
                 [--sections sections.tsv] [--json-out summary.json]
                 [--index-out DIR]

REPORT_DIR is a wstest outdir (holding index.json), or a directory whose
subdirectories are (run.sh runs one wstest per section into REPORT_DIR/<n>/).

The suite judges every case twice, and its HTML report shows both:
"behavior" (did the server do the right thing with the frames) and
"behaviorClose" (did the connection end the right way).

behavior, one column each:
  OK             passed
  NON-STRICT     passed, not in the strictest way (e.g. invalid UTF-8 detected
                 at the end of the message instead of at the bad fragment)
  INFORMATIONAL  no verdict; the suite only records what the server did
  UNIMPLEMENTED  the feature was not negotiated (sections 12/13: the server did
                 not accept permessage-deflate)
  FAILED         failed; any other value (e.g. "NO CLOSE") is counted here too,
                 as the suite's HTML report shows it as "Fail" as well
  MISSING        (ours) selected but not in the report: wstest was stopped by
                 --timeout, or lost the server part-way
behaviorClose, for the cases above that passed:
  BADCLOSE       (ours) behaviorClose is FAILED or UNCLEAN, the values the
                 suite's HTML report paints red: e.g. the server never failed
                 the connection after a protocol error, or the client had to
                 (a server that silently ignores bad frames "passes" behavior)
  WRONG CODE and FAILED BY CLIENT (the report's yellow) are listed, not gated.

Exit status: 0 if no case of a gated section is FAILED, MISSING or BADCLOSE
(BADCLOSE not counted with --ignore-close); 1 otherwise; 2 if the report
cannot be read at all.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import sys
from collections import OrderedDict

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED")
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "MISSING", "BADCLOSE")
HEADINGS = ("OK", "NON-STRICT", "INFO", "UNIMPL", "FAILED", "MISSING", "BADCLOSE")
CLOSE_RED = ("FAILED", "UNCLEAN")                    # the HTML report's red close cells
CLOSE_FINE = ("OK", "INFORMATIONAL", None)

# Fallback names, used only when no --expected file (which carries the suite's
# own CaseCategories) is given.
CATEGORIES = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "WebSocket Compression (different payloads)",
    "13": "WebSocket Compression (different parameters)",
}

DEFAULT_GATE = "1,2,3,4,5,6,7,9,10"


def case_key(case_id: str):
    return tuple(int(x) for x in case_id.split("."))


def section_of(case_id: str) -> str:
    return case_id.split(".", 1)[0]


def load_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def case_detail(report_dir: str, entry: dict) -> dict:
    """Description/expectation/result of one case from its own report file."""
    path = os.path.join(report_dir, entry.get("reportfile", ""))
    try:
        r = load_json(path)
    except (OSError, ValueError):
        return {}
    keep = ("description", "expectation", "result", "resultClose",
            "remoteCloseCode", "remoteCloseReason")
    out = {k: r.get(k) for k in keep if r.get(k) not in (None, "")}
    for k in ("description", "expectation"):  # some carry HTML; keep the text before it
        if k in out:
            out[k] = " ".join(out[k].split("<")[0].split())
    return out


def load_results(report_dir: str, agent: str | None):
    """Merge index.json in report_dir, or in each of its subdirectories.
    Returns (results, agent_name, n_index_files); reportfile made relative to report_dir."""
    index_files = []
    top = os.path.join(report_dir, "index.json")
    if os.path.exists(top):
        index_files.append(top)
    elif os.path.isdir(report_dir):
        for name in sorted(os.listdir(report_dir)):
            p = os.path.join(report_dir, name, "index.json")
            if os.path.exists(p):
                index_files.append(p)
    results = {}
    agent_name = agent
    for path in index_files:
        index = load_json(path)  # ValueError handled by the caller
        agents = sorted(index)
        if agent:
            entries = index.get(agent, {})
            if not entries and agents:
                raise ValueError(f"agent {agent!r} not in {path} (has {agents})")
        elif len(agents) <= 1:
            entries = index[agents[0]] if agents else {}
        else:
            raise ValueError(f"several agents in {path}, pick one with --agent: {agents}")
        agent_name = agent_name or (agents[0] if agents else None)
        rel = os.path.relpath(os.path.dirname(path), report_dir)
        for cid, entry in entries.items():
            entry = dict(entry)
            if "reportfile" in entry and rel != ".":
                entry["reportfile"] = os.path.join(rel, entry["reportfile"])
            results[cid] = entry
    return results, agent_name, len(index_files)


def load_section_runs(path: str | None) -> dict:
    """run.sh's sections.tsv: section, cases, seconds, status."""
    runs = {}
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 4:
                    runs[parts[0]] = {"seconds": int(parts[2]), "status": parts[3]}
    return runs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report_dir", help="wstest outdir (index.json), or a directory of them")
    ap.add_argument("--expected", help="JSON from list_cases.py: the selected case ids")
    ap.add_argument("--agent", help="agent name in index.json (default: the only one)")
    ap.add_argument("--gate", default=DEFAULT_GATE,
                    help="comma-separated sections whose FAILED/MISSING/BADCLOSE cases fail "
                         "the run (default %(default)s)")
    ap.add_argument("--ignore-close", action="store_true",
                    help="do not gate on BADCLOSE (gate on the suite's 'behavior' alone)")
    ap.add_argument("--sections", help="run.sh's sections.tsv: time and status of each section's run")
    ap.add_argument("--json-out", help="also write the summary as JSON here")
    ap.add_argument("--index-out", help="write a combined index.json and an index.html "
                                        "linking the per-section reports into this directory")
    ap.add_argument("--max-list", type=int, default=40,
                    help="list at most this many failing cases in detail (default %(default)s)")
    args = ap.parse_args(argv)

    gate = {s.strip() for s in args.gate.split(",") if s.strip()}
    gate_label = ",".join(sorted(gate, key=int))
    categories = dict(CATEGORIES)
    expected_ids = None
    meta = {}
    if args.expected:
        exp = load_json(args.expected)
        expected_ids = list(exp["cases"])
        categories.update(exp.get("categories", {}))
        meta = {k: exp.get(k) for k in ("suite_version", "autobahn_version")}

    try:
        results, agent_name, n_index = load_results(args.report_dir, args.agent)
    except ValueError as e:
        print(f"summarize: {e}", file=sys.stderr)
        return 2
    if n_index == 0:
        if expected_ids is None:
            print(f"summarize: no index.json in or under {args.report_dir}", file=sys.stderr)
            return 2
        print(f"summarize: no report under {args.report_dir}: every selected case counts as MISSING",
              file=sys.stderr)
    section_runs = load_section_runs(args.sections)

    ids = sorted(set(results) | set(expected_ids or []), key=case_key)

    # ---- classify ------------------------------------------------------------
    per_section: "OrderedDict[str, dict]" = OrderedDict()
    by_col = {c: [] for c in COLUMNS}
    close_notes = []  # passed, close flagged yellow by the suite: listed, never gated
    for cid in ids:
        row = per_section.setdefault(section_of(cid), {c: 0 for c in COLUMNS})
        entry = results.get(cid)
        if entry is None:
            verdict = "MISSING"
        else:
            verdict = entry.get("behavior", "FAILED")
            if verdict not in PASSING:
                verdict = "FAILED"
        row[verdict] += 1
        by_col[verdict].append(cid)
        if entry is not None and verdict in ("OK", "NON-STRICT", "INFORMATIONAL"):
            bc = entry.get("behaviorClose")
            if bc in CLOSE_RED:
                row["BADCLOSE"] += 1
                by_col["BADCLOSE"].append(cid)
            elif bc not in CLOSE_FINE:
                close_notes.append((cid, bc, entry.get("remoteCloseCode")))

    def bad_count(row):
        return row["FAILED"] + row["MISSING"] + (0 if args.ignore_close else row["BADCLOSE"])

    # ---- table ---------------------------------------------------------------
    title = "Autobahn|Testsuite"
    if meta.get("suite_version"):
        title += f" {meta['suite_version']} (autobahn {meta.get('autobahn_version')})"
    print(f"{title}: fuzzingclient results, {len(ids)} cases")
    name_w = max([len(f"{s} {categories.get(s, '?')}") for s in per_section] + [len("section"), len("total")])
    timed = bool(section_runs)
    head = (f"{'section':<{name_w}}  {'cases':>5}  " + "  ".join(f"{h:>{max(7, len(h))}}" for h in HEADINGS)
            + ("  {:>6}".format("time") if timed else "") + "  gated")
    print(head)
    print("-" * len(head))
    totals = {c: 0 for c in COLUMNS}
    gated_failed = gated_passed = ungated = 0
    for sec in sorted(per_section, key=int):
        row = per_section[sec]
        n = sum(row[c] for c in COLUMNS if c != "BADCLOSE")
        for c in COLUMNS:
            totals[c] += row[c]
        bad = bad_count(row)
        if sec in gate:
            gated_failed += bad
            gated_passed += n - bad
        else:
            ungated += n
        name = f"{sec} {categories.get(sec, '?')}"
        mark = ("yes" if sec in gate else "no") + ("  <-- FAIL" if sec in gate and bad else "")
        run = section_runs.get(sec)
        t = ("  {:>6}".format(f"{run['seconds']}s" if run else "-")) if timed else ""
        print(f"{name:<{name_w}}  {n:>5}  "
              + "  ".join(f"{row[c]:>{max(7, len(h))}}" for c, h in zip(COLUMNS, HEADINGS)) + f"{t}  {mark}")
    print("-" * len(head))
    total_t = ("  {:>6}".format(f"{sum(r['seconds'] for r in section_runs.values())}s")) if timed else ""
    print(f"{'total':<{name_w}}  {len(ids):>5}  "
          + "  ".join(f"{totals[c]:>{max(7, len(h))}}" for c, h in zip(COLUMNS, HEADINGS)) + total_t)
    for sec, run in sorted(section_runs.items(), key=lambda kv: int(kv[0])):
        if run["status"] != "ok":
            print(f"section {sec}: {run['status']}")
    if args.ignore_close and totals["BADCLOSE"]:
        print("(--ignore-close: BADCLOSE cases are not gated)")

    # ---- details -------------------------------------------------------------
    details = []
    for col in ("FAILED", "BADCLOSE"):
        for cid in by_col[col]:
            entry = results[cid]
            details.append({"case": cid, "verdict": col if col == "BADCLOSE" else entry.get("behavior"),
                            "behavior": entry.get("behavior"),
                            "behaviorClose": entry.get("behaviorClose"),
                            "gated": section_of(cid) in gate and not (col == "BADCLOSE" and args.ignore_close),
                            "reportfile": entry.get("reportfile"),
                            **case_detail(args.report_dir, entry)})
    details.sort(key=lambda d: case_key(d["case"]))
    if details:
        print()
        print("FAILED and BADCLOSE cases (the suite's wording; the case's own report has the wire log):")
        for d in details[: args.max_list]:
            tag = "" if d["gated"] else " (not gated)"
            label = "BADCLOSE" if d["verdict"] == "BADCLOSE" else d["verdict"]
            print(f"  {d['case']:<8} {label}{tag}: {d.get('description', '')}")
            if d.get("expectation"):
                print(f"           expected: {d['expectation']}")
            if d.get("result") and d["verdict"] != "BADCLOSE":
                print(f"           got:      {d['result']}")
            if d.get("resultClose") and d.get("behaviorClose") != "OK":
                code = d.get("remoteCloseCode")
                reason = d.get("remoteCloseReason")
                extra = (f" (server close code {code}" + (f", reason {reason!r})" if reason else ")")) if code else ""
                print(f"           close:    {d['resultClose']} [{d.get('behaviorClose')}]{extra}")
            if d.get("reportfile"):
                print(f"           report:   {os.path.join(args.report_dir, d['reportfile'])[:-5]}.html")
        if len(details) > args.max_list:
            print(f"  ... and {len(details) - args.max_list} more (see summary.json)")
    missing_by_section = OrderedDict()
    for cid in by_col["MISSING"]:
        missing_by_section.setdefault(section_of(cid), []).append(cid)
        details.append({"case": cid, "verdict": "MISSING", "gated": section_of(cid) in gate})
    if missing_by_section:
        print()
        print("MISSING cases (selected, but not in the report):")
        for sec, cids in missing_by_section.items():
            run = section_runs.get(sec)
            why = run["status"] if run and run["status"] != "ok" else "wstest aborted or lost the server"
            shown = " ".join(cids[:12]) + (" ..." if len(cids) > 12 else "")
            print(f"  section {sec}: {len(cids)} case(s): {why}")
            print(f"             {shown}")
    for col in ("NON-STRICT", "INFORMATIONAL"):
        if by_col[col]:
            print()
            print(f"{col} cases: {' '.join(by_col[col])}")
    if close_notes:
        print()
        print("Passed, closing handshake flagged yellow by the suite (not gated; see the case report):")
        print("  " + " ".join(f"{cid}[{bc}{', code ' + str(code) if code else ''}]" for cid, bc, code in close_notes))

    print()
    what = "FAILED or MISSING" if args.ignore_close else "FAILED, MISSING or BADCLOSE"
    if gated_failed:
        print(f"RESULT: FAIL: {gated_failed} case(s) {what} in gated sections {gate_label}")
    else:
        print(f"RESULT: PASS: no case {what} in gated sections {gate_label}")
    # A plain closing line of the form CI log readers understand.
    print(f"autobahn: {gated_passed} passed, {gated_failed} failed, {ungated} skipped")

    if args.json_out:
        summary = {
            "suite": meta,
            "agent": agent_name,
            "gate": sorted(gate, key=int),
            "gate_on_close": not args.ignore_close,
            "sections": {s: {"name": categories.get(s), "gated": s in gate,
                             **per_section[s], **({"run": section_runs[s]} if s in section_runs else {})}
                         for s in sorted(per_section, key=int)},
            "totals": totals,
            "gated_passed": gated_passed,
            "gated_failed": gated_failed,
            "not_gated": ungated,
            "failing": details,
            "non_strict": by_col["NON-STRICT"],
            "informational": by_col["INFORMATIONAL"],
            "close_notes": [{"case": c, "behaviorClose": b, "remoteCloseCode": k} for c, b, k in close_notes],
            "result": "FAIL" if gated_failed else "PASS",
        }
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    if args.index_out:
        write_index(args.index_out, args.report_dir, agent_name or "agent", results, per_section,
                    categories, gate, section_runs, title, gated_failed, bad_count)
    return 1 if gated_failed else 0


def write_index(out_dir, report_dir, agent, results, per_section, categories, gate,
                section_runs, title, gated_failed, bad_count):
    """Combined index.json (the suite's format, one agent) and a small index.html
    that links each section's own HTML report."""
    rel = os.path.relpath(report_dir, out_dir)
    combined = {}
    for cid in sorted(results, key=case_key):
        e = dict(results[cid])
        if "reportfile" in e:
            e["reportfile"] = os.path.normpath(os.path.join(rel, e["reportfile"]))
        combined[cid] = e
    with open(os.path.join(out_dir, "index.json"), "w", encoding="utf-8") as f:
        json.dump({agent: combined}, f, indent=1)
        f.write("\n")
    rows = []
    for sec in sorted(per_section, key=int):
        row = per_section[sec]
        link = os.path.join(rel, sec, "index.html")
        exists = os.path.exists(os.path.join(report_dir, sec, "index.html"))
        name = html.escape(f"{sec} {categories.get(sec, '?')}")
        cell = f'<a href="{html.escape(link)}">{name}</a>' if exists else name
        run = section_runs.get(sec, {})
        cls = "fail" if sec in gate and bad_count(row) else ""
        n = sum(row[c] for c in COLUMNS if c != "BADCLOSE")
        rows.append(f'<tr class="{cls}"><td>{cell}</td><td>{n}</td>'
                    + "".join(f"<td>{row[c]}</td>" for c in COLUMNS)
                    + f"<td>{run.get('seconds', '')}</td><td>{'yes' if sec in gate else 'no'}</td>"
                    + f"<td>{html.escape(run.get('status', ''))}</td></tr>")
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:right}}
td:first-child,th:first-child,td:last-child{{text-align:left}} tr.fail{{background:#fbb}}</style></head>
<body><h1>{html.escape(title)}: {html.escape(agent)}</h1>
<p>Result: <b>{"FAIL" if gated_failed else "PASS"}</b>. Each section name links the suite's own
HTML report for that section (one wstest run per section). BADCLOSE counts cases whose verdict
passed but whose closing behaviour the suite marks red (Fail/Unclean). See summary.txt for details.</p>
<table><tr><th>section</th><th>cases</th>{"".join(f"<th>{h}</th>" for h in HEADINGS)}<th>seconds</th><th>gated</th><th>run</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write(doc)


if __name__ == "__main__":
    sys.exit(main())
