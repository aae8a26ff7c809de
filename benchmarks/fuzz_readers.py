"""Fuzz rtkit's readers outside CI: many hypothesis-generated mutations of valid objects.

The targets and strategies are those of tests/test_fuzz.py (tests/fuzzing.py):
a CT series, an RT Structure Set, an RT Dose and an RT Plan, each mutated in
headers, nested sequence items, contour data and raw bytes, and read in
lenient or strict mode.  Any exception that is not an ``rtkit.RTKitError``
(or a failed usability check) is a defect; hypothesis shrinks it and it is
printed.

Usage::

    nice -n 10 .venv/bin/python benchmarks/fuzz_readers.py --cases 10000 [--seed 1] [--json out.json]

Exit status 0 when no defect was found.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def _make_case(target, counts, n, seed_value, work, run_case, mutations):
    """A hypothesis test running ``n`` generated cases of ``target``, counting outcomes."""
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    @seed(seed_value)
    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(ops=mutations(target), strict=st.booleans(), which=st.integers(0, 2))
    def case(ops, strict, which):
        out = run_case(target, ops, strict, work / target, which)
        if out is None:
            counts["not writable (skipped)"] += 1
        else:
            counts["ran"] += 1
            counts[f"{out.status}{':' + out.detail if out.detail else ''}"] += 1

    return case


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000, help="generated cases in total (split over the targets)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the summary as JSON")
    args = ap.parse_args(argv)

    from fuzzing import TARGETS, mutations, run_case

    import rtkit

    per_target = -(-args.cases // len(TARGETS))
    work = Path(tempfile.mkdtemp(prefix="rtkit-fuzz-"))
    summary: dict = {"cases_requested": args.cases, "seed": args.seed, "targets": {}}
    t0 = time.perf_counter()
    defects = []
    for target in TARGETS:
        counts: collections.Counter[str] = collections.Counter()
        case = _make_case(target, counts, per_target, args.seed, work, run_case, mutations)

        t = time.perf_counter()
        try:
            case()
        except Exception as exc:  # noqa: BLE001 - a defect: report it, go on with the next target
            defects.append({"target": target, "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=8)})
            print(f"DEFECT in {target}:\n{traceback.format_exc(limit=8)}", file=sys.stderr)
        summary["targets"][target] = {"seconds": round(time.perf_counter() - t, 1), **dict(counts)}
        print(f"{target:9s} {dict(counts)}  ({time.perf_counter() - t:.0f} s)", flush=True)
    ran = sum(v.get("ran", 0) for v in summary["targets"].values())
    generated = ran + sum(v.get("not writable (skipped)", 0) for v in summary["targets"].values())
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = "?"
    summary.update({
        "generated": generated, "ran": ran, "defects": defects, "seconds": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "git": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
                   f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "rtkit": getattr(rtkit, "__version__", "?"),
    })
    print(f"generated {generated} cases, {ran} ran ({generated - ran} mutations pydicom could not write), "
          f"{len(defects)} defect(s), {summary['seconds']} s, {summary['date']}, git {commit}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 1 if defects else 0


if __name__ == "__main__":
    raise SystemExit(main())
