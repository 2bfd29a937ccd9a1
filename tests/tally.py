#!/usr/bin/env python3
"""tally.py - count the Criterion runs of tests/run_all.sh from their JSON reports
(`run_tests --json=FILE`), so that every test is counted once.

  python3 tests/tally.py main FILE... -- rerun FILE...

`main` reports: the distinct tests (the full run). `rerun` reports: the same
tests again under AddressSanitizer/UBSan (the ASan test binary, or the ASan
program through MINIFUSE_BIN). A re-run that fails makes that test failed; a
re-run that passes adds nothing to the count. Tests skipped with a reason
(cr_skip_test) are listed. A report that is missing or unreadable (the runner
died) counts as one failure.

Prints human lines, then one machine line: "TALLY <passed> <failed> <skipped>".
"""
import json
import sys


def load(path):
    """{ "suite/test": (status, [messages]) } of the tests that ran; None if unreadable."""
    try:
        with open(path) as f:
            rep = json.load(f)
    except (OSError, ValueError):
        return None
    out = {}
    for suite in rep.get("test_suites", []):
        for t in suite.get("tests", []):
            msgs = t.get("messages", [])
            # a test left out by --filter is reported SKIPPED with this fixed message: it did not run
            if t["status"] == "SKIPPED" and msgs == ["The test was skipped."]:
                continue
            out[suite["name"] + "/" + t["name"]] = (t["status"], msgs)
    return out


def main(argv):
    if "--" in argv:
        k = argv.index("--")
        main_files, rerun_files = argv[1:k], argv[k + 1:]
    else:
        main_files, rerun_files = argv[1:], []
    results, broken = {}, []
    for p in main_files:
        r = load(p)
        if r is None:
            broken.append(p)
        else:
            results.update(r)
    rerun, rerun_failed = {}, {}
    for p in rerun_files:
        r = load(p)
        if r is None:
            broken.append(p)
            continue
        for name, (st, msgs) in r.items():
            rerun.setdefault(name, []).append(st)
            if st not in ("PASSED", "SKIPPED"):
                rerun_failed.setdefault(name, []).append(p)
    passed = failed = skipped = 0
    for name, (st, msgs) in sorted(results.items()):
        if st == "SKIPPED":
            skipped += 1
            print(f"skipped: {name}: {' '.join(msgs)}")
        elif st == "PASSED" and name not in rerun_failed:
            passed += 1
        else:
            failed += 1
            if st == "PASSED":
                print(f"failed under the sanitizers only: {name} ({', '.join(rerun_failed[name])})")
    for name in sorted(set(rerun_failed) - set(results)):
        failed += 1  # re-run of a test the main run did not run (a filter that names no main test)
        print(f"failed under the sanitizers: {name}")
    for p in broken:
        failed += 1
        print(f"no report: {p} (the runner died)")
    runs = sum(len(v) for v in rerun.values())
    rp = sum(st == "PASSED" for v in rerun.values() for st in v)
    print(f"sanitizer re-runs: {rp} passed, {runs - rp} failed ({len(rerun)} of the tests above run again under "
          f"ASan/UBSan; counted once below)")
    print(f"TALLY {passed} {failed} {skipped}")


if __name__ == "__main__":
    main(sys.argv)
