"""Plan QA: check a plan's DVHs against a protocol table of constraints.

Reads a case (default: rtkit's built-in synthetic case), computes the DVH of
every structure the protocol names in the plan dose, evaluates each
constraint of the protocol (JSON, see ``protocol.json`` beside this script)
and prints PASS/FAIL per constraint.  Writes to the output folder:

- ``plan_qa.csv``: one row per constraint (structure, metric, value, unit,
  operator, limit, result);
- ``plan_qa.png``: the DVH curves with the constrained metrics marked, and an
  axial CT slice through the target with contours and the dose colourwash.

A protocol is ``{"prescription_gy": 60, "constraints": [{"structure": "PTV",
"metric": "D95%", "op": ">=", "limit": 57.0}, ...]}``; metrics are TG-263
strings as accepted by ``rtkit.DVH`` (``D95%``, ``D0.03cc``, ``V20Gy[%]``,
``Dmean``, ``Dmean[%]``...), in Gy, cm3 or % as the metric says.

Usage::

    python examples/plan_qa.py OUT_DIR [--case FOLDER] [--protocol FILE] [--exit-code]

``--exit-code`` makes the script exit with 1 when a constraint fails (for
use in an automated pipeline); by default it exits 0 once the check has run.
"""

from __future__ import annotations

import argparse
import csv
import json
import operator
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

import rtkit  # noqa: E402
from rtkit.dvh import parse_metric  # noqa: E402

HERE = Path(__file__).resolve().parent
OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def metric_unit(metric: str) -> str:
    """The unit of a TG-263 metric's value: Gy, cGy, "% Rx" for doses; cc, "% vol" for volumes."""
    p = parse_metric(metric)
    if p["kind"] == "V":
        return "cc" if p["out"] == "cc" else "% vol"
    return {"Gy": "Gy", "cGy": "cGy", "%": "% Rx"}[p["out"]]


def load_protocol(path: Path) -> dict:
    """Read and check a protocol file (every metric parsed, every operator known)."""
    protocol = json.loads(Path(path).read_text())
    for i, c in enumerate(protocol.get("constraints", [])):
        missing = {"structure", "metric", "op", "limit"} - set(c)
        if missing:
            raise SystemExit(f"{path}: constraint {i} lacks {sorted(missing)}")
        if c["op"] not in OPS:
            raise SystemExit(f"{path}: constraint {i}: operator {c['op']!r} is not one of {sorted(OPS)}")
        parse_metric(c["metric"])  # an unknown metric raises rtkit.MetricError naming the accepted forms
    return protocol


def evaluate(case: rtkit.Case, protocol: dict) -> tuple[list[dict], rtkit.DVHSet]:
    """Evaluate every constraint; returns the result rows and the DVHs."""
    if case.dose is None or case.structures is None:
        raise SystemExit(f"{case}: plan QA needs an RT Dose and an RT Structure Set")
    rx = protocol.get("prescription_gy")
    if rx is None and case.plan is not None:
        rx = case.plan.prescription_gy
    wanted = []
    for c in protocol["constraints"]:
        name = case.structures[c["structure"]].name  # exact, then case-insensitive
        if name not in wanted:
            wanted.append(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", rtkit.RTKitWarning)
        dvhs = rtkit.dvhs(case.dose, case.structures, names=wanted, prescription_gy=rx)
    for w in caught:
        print(f"warning: {w.message}")
    rows = []
    for c in protocol["constraints"]:
        d = dvhs[c["structure"]]
        value = float(d[c["metric"]])
        ok = bool(OPS[c["op"]](value, float(c["limit"])))
        rows.append({"structure": d.name, "metric": c["metric"], "value": value,
                     "unit": metric_unit(c["metric"]), "op": c["op"], "limit": float(c["limit"]),
                     "result": "PASS" if ok else "FAIL", "why": c.get("why", "")})
    return rows, dvhs


def figure(case: rtkit.Case, dvhs: rtkit.DVHSet, rows: list[dict], path: Path) -> Path:
    """DVH curves with the constrained metrics marked, beside an axial slice through the target."""
    fig, (ax_img, ax_dvh) = plt.subplots(1, 2, figsize=(13, 5.5))
    target = next((r["structure"] for r in rows if case.structures[r["structure"]].type in ("PTV", "CTV", "GTV")),
                  rows[0]["structure"])
    pts = [p for c in case.structures[target].contours for p in c.points]
    z = float(sum(p[2] for p in pts) / len(pts)) if pts else None
    rtkit.plot.show_slice(case, z=z, dose=True, isodoses=[0.95 * (case.plan.prescription_gy or 1)]
                          if case.plan is not None and case.plan.prescription_gy else None, ax=ax_img)
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    rtkit.plot.dvh(dvhs, metrics=metrics, structures=case.structures, ax=ax_dvh)
    failed = sum(r["result"] == "FAIL" for r in rows)
    ax_dvh.set_title(f"{len(rows) - failed} of {len(rows)} constraints met")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--case", type=Path, default=None,
                    help="folder holding one case (default: rtkit's synthetic case, written into OUT/case)")
    ap.add_argument("--protocol", type=Path, default=HERE / "protocol.json", help="constraints (JSON)")
    ap.add_argument("--exit-code", action="store_true", help="exit with 1 when a constraint fails")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.case or rtkit.datasets.synthetic_case(args.out / "case")
    case = rtkit.load(folder)
    protocol = load_protocol(args.protocol)
    rows, dvhs = evaluate(case, protocol)

    print(f"{protocol.get('name', args.protocol.name)}: case {case.patient_id}")
    width = max(len(r["structure"]) for r in rows)
    for r in rows:
        print(f"  {r['result']}  {r['structure']:<{width}}  {r['metric']:<10} {r['value']:9.2f} {r['unit']:<6}"
              f"  (limit {r['op']} {r['limit']:g})")
    failed = sum(r["result"] == "FAIL" for r in rows)
    print(f"result: {len(rows) - failed} of {len(rows)} constraints met")

    with open(args.out / "plan_qa.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    figure(case, dvhs, rows, args.out / "plan_qa.png")
    print(f"wrote {args.out / 'plan_qa.csv'} and {args.out / 'plan_qa.png'}")
    return 1 if (failed and args.exit_code) else 0


if __name__ == "__main__":
    sys.exit(main())
