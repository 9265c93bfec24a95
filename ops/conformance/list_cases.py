# -*- coding: utf-8 -*-
"""Expand the case patterns of a fuzzingclient spec with the suite's own code.

Runs under the suite's Python 2.7 interpreter (run.sh calls it with the
suite's venv), so it must stay Python-2.7 compatible.  It asks the installed
autobahntestsuite exactly what `wstest -m fuzzingclient -s SPEC` will run
(same CaseSet class, same pattern rules), so summarize.py can tell a case that
was never reported (wstest aborted, server went away) from one that ran.

Usage: python list_cases.py SPEC.json OUT.json
Writes {"suite_version": ..., "autobahn_version": ..., "cases": [ids...],
        "categories": {"1": "Framing", ...}}.
Exit 2 if the spec selects no case or names a case id the suite does not have.
"""
from __future__ import print_function

import io
import json
import sys


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    spec_path, out_path = argv[1], argv[2]
    with io.open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)

    import autobahn
    import autobahntestsuite
    from autobahntestsuite.case import (Cases, CaseCategories, CaseSubCategories,
                                        CaseSetname, CaseBasename)
    from autobahntestsuite.caseset import CaseSet

    cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
    known = set(cs.CasesIndices.keys())
    for key in ("cases", "exclude-cases"):
        for pattern in spec.get(key, []):
            if "*" not in pattern and pattern not in known:
                print("list_cases: unknown case id %r in %s" % (pattern, key), file=sys.stderr)
                return 2
    cases = cs.parseSpecCases(spec)
    if not cases:
        print("list_cases: the case patterns select no case: %r minus %r"
              % (spec.get("cases"), spec.get("exclude-cases")), file=sys.stderr)
        return 2

    out = {
        "suite_version": autobahntestsuite.version,
        "autobahn_version": autobahn.version,
        "cases": cases,
        "categories": dict(CaseCategories),
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
