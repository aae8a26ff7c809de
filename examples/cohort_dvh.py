"""Cohort DVH extraction: one CSV row per (case, structure, metric).

The cases are the folders given on the command line, or by default a small
demonstration cohort: the Eclipse breast plan of the real test data
(``dicompyler-core``, located by ``--data``, ``$RTKIT_TEST_DATA`` or
``../shared/data`` beside the repository) and rtkit's built-in synthetic
case.  Writes to the output folder:

- ``cohort_dvh.csv``: columns ``case, patient_id, structure, roi, metric,
  value, unit`` (the rows of ``rtkit.cohort.CohortResult``: ``roi`` is the
  case's own ROI name, ``structure`` its standard TG-263 name where
  ``rtkit.cohort``'s starter map knows one, e.g. "Lt Lung" -> "Lung_L");
- ``cohort_failures.csv``: ``case, error`` for cases that could not be read
  (the run goes on without them);
- ``cohort_dvh.png``: one panel per metric, the value of each structure in each case.

When ``rtkit.cohort`` is available (rtkit's batch runner: local processes or
a Dask cluster, resumable), the table is computed by ``rtkit.cohort.run``;
otherwise by the same per-case work in a plain loop (``rtkit.load`` and
``rtkit.dvhs`` case after case), which gives the same rows.

Usage::

    python examples/cohort_dvh.py OUT_DIR [CASE_FOLDER ...] [--metrics Dmean,D95%,...]
                                  [--structures PTV,Heart] [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

import rtkit  # noqa: E402
from rtkit.dvh import parse_metric  # noqa: E402

FIELDS = ["case", "patient_id", "structure", "roi", "metric", "value", "unit"]
DEFAULT_METRICS = ["Dmean", "Dmax", "D95%", "D2%", "V5Gy[%]"]


def data_root(arg: Path | None = None) -> Path:
    """The real test data: ``--data``, else ``$RTKIT_TEST_DATA``, else ``../shared/data`` beside the repository."""
    if arg is not None:
        return arg
    env = os.environ.get("RTKIT_TEST_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def metric_unit(metric: str) -> str:
    """The unit of a TG-263 metric's value: Gy, cGy, "% Rx" for doses; cc, "% vol" for volumes."""
    p = parse_metric(metric)
    if p["kind"] == "V":
        return "cc" if p["out"] == "cc" else "% vol"
    return {"Gy": "Gy", "cGy": "cGy", "%": "% Rx"}[p["out"]]


def case_rows(folder: Path, metrics: list[str], structures: list[str] | None) -> list[dict]:
    """The rows of one case: every non-empty structure (or the named ones) x every metric."""
    case = rtkit.load(folder)
    if case.dose is None or case.structures is None:
        raise rtkit.RTKitError(f"{folder}: the case has no RT Dose or no RT Structure Set")
    names = [case.structures[n].name for n in structures] if structures else [
        n for n in case.structures.names if not case.structures[n].is_empty]
    rx = case.plan.prescription_gy if case.plan is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)  # e.g. volume outside the dose grid
        dvhs = rtkit.dvhs(case.dose, case.structures, names=names, prescription_gy=rx)
    return [{"case": folder.name, "patient_id": case.patient_id, "structure": name, "roi": name, "metric": m,
             "value": float(d[m]), "unit": metric_unit(m)} for name, d in dvhs.items() for m in metrics]


def run_loop(sources: list[Path], metrics: list[str], structures: list[str] | None
             ) -> tuple[list[dict], list[tuple[str, str]]]:
    """The same per-case work as ``rtkit.cohort.run``, one case after the other."""
    rows, failures = [], []
    for folder in sources:
        try:
            rows.extend(case_rows(folder, metrics, structures))
        except (rtkit.RTKitError, OSError) as exc:  # record the case and go on
            failures.append((folder.name, f"{type(exc).__name__}: {exc}"))
    return rows, failures


def run(sources: list[Path], metrics: list[str], structures: list[str] | None, out: Path, workers: int
        ) -> tuple[list[dict], list[tuple[str, str]], str]:
    """Rows, failures and the engine used (``rtkit.cohort`` when importable, else the loop)."""
    try:
        from rtkit import cohort
    except ImportError:
        rows, failures = run_loop(sources, metrics, structures)
        return rows, failures, "loop"
    result = cohort.run([str(s) for s in sources], metrics, structures=structures, workers=workers,
                        out=out / "cohort_run.csv", resume=False, overwrite=True)
    rows = [{k: r[k] for k in FIELDS} for r in result.rows]
    failures = [(str(f["case"]), str(f["error"])) for f in result.failures]
    return rows, failures, "rtkit.cohort"


def figure(rows: list[dict], path: Path) -> Path:
    """One panel per metric: the value of each structure, one marker colour per case."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 4.5), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=False):
        sel = [r for r in rows if r["metric"] == m]
        names = list(dict.fromkeys(r["structure"] for r in sel))  # standard names line up across cases
        for i, case in enumerate(cases):
            pts = [(names.index(r["structure"]), r["value"]) for r in sel if r["case"] == case]
            if pts:
                x, y = zip(*pts, strict=True)
                label = next(r["patient_id"] for r in sel if r["case"] == case)
                ax.plot(x, y, "o", color=f"C{i}", label=f"patient {label}")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(m)
        ax.set_ylabel(sel[0]["unit"] if sel else "")
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("cases", type=Path, nargs="*", help="case folders (default: the demonstration cohort)")
    ap.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated TG-263 metrics")
    ap.add_argument("--structures", default=None, help="comma-separated structure names (default: all non-empty)")
    ap.add_argument("--data", type=Path, default=None, help="the real test data folder")
    ap.add_argument("--workers", type=int, default=1, help="worker processes for rtkit.cohort (default 1)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for m in metrics:
        parse_metric(m)  # fail early with the accepted forms
    structures = [s.strip() for s in args.structures.split(",")] if args.structures else None
    sources = list(args.cases)
    if not sources:
        breast = data_root(args.data) / "dicompyler-core"
        if not breast.is_dir():
            raise SystemExit(f"{breast} not found: give case folders, --data or RTKIT_TEST_DATA")
        sources = [breast, rtkit.datasets.synthetic_case(args.out / "synthetic_case")]

    rows, failures, engine = run(sources, metrics, structures, args.out, args.workers)
    with open(args.out / "cohort_dvh.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    with open(args.out / "cohort_failures.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "error"])
        w.writerows(failures)
    figure(rows, args.out / "cohort_dvh.png")
    print(f"{len(sources)} case(s) via {engine}: {len(rows)} rows, {len(failures)} failed case(s)")
    for case, error in failures:
        print(f"  failed: {case}: {error}")
    print(f"wrote {args.out / 'cohort_dvh.csv'}, {args.out / 'cohort_failures.csv'} and {args.out / 'cohort_dvh.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
