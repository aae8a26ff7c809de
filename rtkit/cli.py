"""The ``rtkit`` command line.

Exit codes: 0 success, 1 an rtkit error (the message says what and where),
2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .cohort import CohortError
from .errors import MetricError, RTKitError, RTKitWarning

log = logging.getLogger("rtkit.cli")

_EPILOG = """\
examples:
  rtkit info /data/patients            list patients, studies, series and RT links
  rtkit info /data/patients --cases    also show the cases rtkit.load would build
  rtkit info RP.dcm                    one-screen plan summary (beams, MU, angles, arcs, Rx)
  rtkit demo                           write the built-in synthetic case and summarise it
  rtkit demo --out demo_case           ... into a folder of your choice
  rtkit masks demo_case --out masks    ROI masks and the CT as NIfTI (needs rtkit[nifti])
  rtkit dvh demo_case --metrics "D95%,Dmean" --structures PTV
  rtkit register CT_DIR MR_DIR --out reg.dcm  rigid MR -> CT, written as a DICOM REG
  rtkit gamma RD_ref.dcm RD_eval.dcm --criteria 3%/3mm   gamma pass rate
  rtkit cohort /data/cohort --metrics "PTV:D95%,Lung_L:V20Gy[%],Heart:Dmean" --out table.csv
                                       DVH metrics of every case, on all local cores (resumable)
  rtkit cohort /data/cohort --metrics "PTV:D95%" --out t.csv --scheduler tcp://host:8786
                                       ... on a Dask cluster

exit codes: 0 success; 1 an rtkit error, or (cohort) some cases failed; 2 usage error
"""


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _cmd_info(args: argparse.Namespace) -> int:
    from .io.scan import scan

    index = scan(args.path, progress=args.progress)
    _out(index.summary())
    plans = [i for s in index.series if s.modality == "RTPLAN" for i in s.instances]
    if plans and (args.plans or len(plans) == 1):
        from .io.rtplan import read_plan

        for inst in plans:
            _out("")
            try:
                _out(read_plan(inst.path).summary())
            except RTKitError as exc:
                _out(f"{inst.path}: {exc}")
    if args.cases:
        cases = index.cases()
        _out(f"\n{len(cases)} case(s):")
        for c in cases:
            _out(c.summary())
    if args.verbose and index.skipped:
        _out("\nskipped:")
        for path, why in index.skipped:
            _out(f"  {path}: {why}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    report = run_demo(args.out, png=False if args.no_png else args.png)
    for line in report.lines:
        _out(line)
    if report.png is not None:
        _out(f"review figure (CT + contours + dose, DVH) written to {report.png}")
    for note in report.notes:
        _out(note)
    return 0


def _safe_name(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name.strip())
    return keep or "roi"


def _cmd_masks(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .errors import RTKitError as _Err
    from .image import Image
    from .io.case import load

    case = load(args.case, progress=args.progress)
    ct, ss = case.ct, case.structures
    if ct is None:
        raise _Err(f"{args.case}: the case has no CT; masks are written on the CT grid")
    if ss is None:
        raise _Err(f"{args.case}: the case has no RT Structure Set")
    names = [n.strip() for n in args.names.split(",")] if args.names else ss.names
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ct.to_nifti(out / "ct.nii.gz", overwrite=args.overwrite)
    labels = np.zeros(ct.grid.shape, dtype=np.uint16) if args.label_map else None
    table = {}
    used: set[str] = set()
    for i, name in enumerate(names, start=1):
        roi = ss[name]
        mask = roi.mask(ct.grid, fractional=args.fractional)
        fname = _safe_name(roi.name)
        while fname in used:
            fname += "_"
        used.add(fname)
        data = mask if args.fractional else mask.astype(np.uint8)
        Image(data, ct.grid, "SEG").to_nifti(out / f"{fname}.nii.gz", overwrite=args.overwrite)
        if labels is not None:
            labels[(mask > 0.5) if args.fractional else mask] = i
        table[i] = {"name": roi.name, "file": f"{fname}.nii.gz", "volume_cc": roi.volume,
                    "empty": roi.is_empty}
        _out(f"{roi.name:<24} -> {fname}.nii.gz  ({'empty' if roi.is_empty else f'{roi.volume:.2f} cm3'})")
    if labels is not None:
        Image(labels, ct.grid, "SEG").to_nifti(out / "labels.nii.gz", overwrite=args.overwrite)
        _out("label map -> labels.nii.gz (later ROIs overwrite earlier ones where they overlap)")
    from ._atomic import atomic_path

    with atomic_path(out / "rois.json", overwrite=args.overwrite) as tmp:
        tmp.write_text(json.dumps(table, indent=2))
    _out(f"wrote {len(names)} mask(s), the CT and rois.json to {out}")
    return 0


def _cmd_dvh(args: argparse.Namespace) -> int:
    from .dvh import dvhs, parse_metric
    from .errors import RTKitError as _Err
    from .io.case import load

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for m in metrics:
        parse_metric(m)  # MetricError (usage) before any work
    case = load(args.case, progress=args.progress)
    if case.dose is None:
        raise _Err(f"{args.case}: the case has no plan dose (RT Dose)")
    if case.structures is None:
        raise _Err(f"{args.case}: the case has no RT Structure Set")
    rx = args.prescription
    if rx is None and case.plan is not None:
        rx = case.plan.prescription_gy
    names = [n.strip() for n in args.structures.split(",")] if args.structures else [
        n for n in case.structures.names if not case.structures[n].is_empty]
    result = dvhs(case.dose, case.structures, names=names, prescription_gy=rx,
                  between_planes=args.between_planes, workers=args.workers)
    rows = result.table(metrics)
    width = max(len("structure"), *(len(r["structure"]) for r in rows)) if rows else 9
    _out(f"{'structure':<{width}}  " + "  ".join(f"{m:>12}" for m in metrics))
    for r in rows:
        _out(f"{r['structure']:<{width}}  " + "  ".join(f"{r[m]:>12.4g}" for m in metrics))
    if args.out:
        result.to_csv(args.out, metrics, overwrite=args.overwrite)
        _out(f"wrote {args.out}")
    return 0


def _cmd_register(args: argparse.Namespace) -> int:
    import time

    from .io.series import read_image
    from .registration import register

    fixed, moving = read_image(args.fixed), read_image(args.moving)
    start = time.perf_counter()
    reg = register(fixed, moving, method=args.method, metric=args.metric, initial=args.initial,
                   progress=args.progress)
    _out(f"{reg!r} in {time.perf_counter() - start:.1f} s")
    _out("matrix (moving patient mm -> fixed patient mm):")
    for row in reg.matrix:
        _out("  " + "  ".join(f"{v:12.6f}" for v in row))
    if args.out:
        reg.save(args.out, overwrite=args.overwrite)
        _out(f"wrote {args.out} (DICOM Spatial Registration)")
    if args.resampled:
        reg.resample(moving).to_nifti(args.resampled, overwrite=args.overwrite)
        _out(f"wrote {args.resampled} (the moving image on the fixed grid)")
    return 0


def _cmd_gamma(args: argparse.Namespace) -> int:
    import re
    import time

    from .gamma import gamma
    from .image import Image
    from .io.rtdose import read_dose

    m = re.fullmatch(r"\s*([0-9.]+)\s*%\s*/\s*([0-9.]+)\s*mm\s*", args.criteria)
    if not m:
        sys.stderr.write(f"rtkit gamma: error: --criteria must look like 3%/3mm, not {args.criteria!r}\n")
        return 2
    ref, ev = read_dose(args.reference), read_dose(args.evaluated)
    start = time.perf_counter()
    res = gamma(ref, ev, float(m.group(1)), float(m.group(2)), local=args.local,
                lower_cutoff_percent=args.cutoff, max_gamma=args.max_gamma)
    _out(f"gamma {float(m.group(1)):g}%/{float(m.group(2)):g} mm {'local' if args.local else 'global'}, "
         f"cutoff {args.cutoff:g}% of {res.normalization_gy:.4g} Gy: pass rate {res.pass_rate:.2f} % "
         f"({res.evaluated.size} voxels), mean {res.mean:.3f}, in {time.perf_counter() - start:.1f} s")
    if args.out:
        Image(res.array, res.grid, "GAMMA").to_nifti(args.out, overwrite=args.overwrite)
        _out(f"wrote {args.out} (gamma map on the reference grid; NaN below the cutoff)")
    return 0


def _cmd_cohort(args: argparse.Namespace) -> int:
    from . import cohort

    sources = args.sources[0] if len(args.sources) == 1 else list(args.sources)
    structures = [n.strip() for n in args.structures.split(",") if n.strip()] if args.structures else None
    try:
        res = cohort.run(sources, args.metrics, structures=structures, structure_map=args.structure_map,
                         workers=args.workers, scheduler=args.scheduler, out=args.out,
                         resume=not args.no_resume, overwrite=args.overwrite,
                         prescription_gy=args.prescription, between_planes=args.between_planes,
                         progress=args.progress, max_cases=args.max_cases)
    except KeyboardInterrupt:
        sys.stderr.write(f"rtkit cohort: interrupted; finished cases are in {args.out}; run the same "
                         "command again to resume\n")
        return 130
    ok_cases = len({r["case"] for r in res.rows})
    _out(f"{len(res.cases)} case(s): {ok_cases} with results, {len(res.failures)} failed; "
         f"{res.computed} computed in {res.seconds:.1f} s"
         + (f" ({res.computed / res.seconds * 60:.1f} cases/min)" if res.computed and res.seconds > 0 else "")
         + (f", {res.skipped} already in {args.out}" if res.skipped else ""))
    missing = [r for r in res.rows if r["status"] != "ok"]
    if missing:
        kinds: dict[str, int] = {}
        for r in missing:
            kinds[r["status"]] = kinds.get(r["status"], 0) + 1
        _out("rows without a value: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
             + " (see the status and error columns)")
    for f in res.failures:
        _out(f"failed: {f['case']}: {f['error']}")
    if not res.complete:
        left = len(res.cases) - res.skipped - res.computed
        _out(f"stopped after {res.computed} case(s) (--max-cases); {left} left: run again to resume")
    _out(f"wrote {res.out}" + (f" and {res.parquet}" if res.parquet else ""))
    return 1 if res.failures else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="rtkit",
        description="Radiotherapy DICOM-RT analysis with exact geometry.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"rtkit {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "info",
        help="list what a folder of DICOM holds",
        description="Scan a folder (headers only) and print patients / studies / series with "
        "modality, file counts, descriptions, frames of reference and RT links, and the number "
        "of skipped non-DICOM files.",
        epilog="examples:\n  rtkit info /data/case1\n  rtkit info /data --cases --progress",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", type=Path, help="folder or file to scan")
    p.add_argument("--cases", action="store_true", help="also print the linked cases")
    p.add_argument("--plans", action="store_true",
                   help="print a summary of every RT Plan (automatic when there is only one)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="list skipped files")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "demo",
        help="write and summarise the built-in synthetic case",
        description="Write the synthetic planning case (CT, RT Structure Set, RT Plan, RT Dose) "
        "generated in code, load it, print its summary and a DVH table of its ROIs, and write a "
        "review figure (axial and sagittal CT with contours and dose, DVH curves; needs "
        "matplotlib, rtkit[plot]) beside the case folder.",
        epilog="examples:\n  rtkit demo\n  rtkit demo --out ./demo_case       (figure: ./demo_case-review.png)\n"
        "  rtkit demo --png review.png\n  rtkit demo --no-png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=None, help="folder to write (default: a temporary folder)")
    p.add_argument("--png", type=Path, default=None,
                   help="review figure to write (default: <case folder>-review.png beside the case folder)")
    p.add_argument("--no-png", action="store_true", help="do not write the review figure")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "masks",
        help="write ROI masks and the CT as NIfTI",
        description="Rasterise the RT Structure Set of a case on its CT grid and write one "
        "NIfTI file per ROI (uint8 0/1, or float32 occupancy with --fractional), the CT "
        "(ct.nii.gz, HU) and rois.json (names, files, volumes). NIfTI files use RAS, with "
        "affines that keep every voxel at its patient position.",
        epilog="examples:\n  rtkit masks /data/case1 --out masks/\n"
        "  rtkit masks /data/case1 --out masks/ --structures PTV,Heart --fractional\n"
        "  rtkit masks /data/case1 --out masks/ --label-map",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("case", type=Path, help="folder holding one case")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--structures", "--names", dest="names", help="comma-separated ROI names (default: all)")
    p.add_argument("--fractional", action="store_true", help="float32 voxel occupancy instead of 0/1")
    p.add_argument("--label-map", action="store_true", help="also write labels.nii.gz (uint16)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--progress", action="store_true", help="show a progress bar while scanning")
    p.set_defaults(func=_cmd_masks)

    p = sub.add_parser(
        "dvh",
        help="DVH metrics of a case's structures",
        description="Compute the DVH of each structure in the case's plan dose and print "
        "TG-263 metrics (see docs/dvh.md for the forms and the method).",
        epilog='examples:\n  rtkit dvh /data/case1 --metrics "D95%,V20Gy[%],Dmean"\n'
        '  rtkit dvh /data/case1 --metrics "D0.03cc,Dmax[cGy]" --structures PTV,Heart --out dvh.csv',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("case", type=Path, help="folder holding one case")
    p.add_argument("--metrics", required=True, help='comma-separated TG-263 metrics, e.g. "D95%%,V20Gy[%%],Dmean"')
    p.add_argument("--structures", help="comma-separated ROI names (default: every non-empty ROI)")
    p.add_argument("--prescription", type=float, help="prescription in Gy (default: the plan's)")
    p.add_argument("--between-planes", choices=("smooth", "slab"), default="smooth",
                   help="surface between contour planes: interpolated (default) or slabs (Structure.volume)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes computing the DVHs (default 0: the usable CPU cores; the table does not depend on it)")
    p.add_argument("--out", type=Path, help="also write the table as CSV")
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    p.add_argument("--progress", action="store_true", help="show a progress bar while scanning")
    p.set_defaults(func=_cmd_dvh)

    p = sub.add_parser(
        "register",
        help="register an image series onto another (rigid/affine) and write a DICOM REG",
        description="Register the MOVING image series (MR, PET, CBCT) onto the FIXED one (normally "
        "the planning CT) in patient coordinates: multi-resolution, Mattes mutual information by "
        "default. Prints the transform (moving -> fixed patient coordinates) and writes a DICOM "
        "Spatial Registration and/or the moving image resampled onto the fixed grid (NIfTI). "
        "See docs/registration.md.",
        epilog="examples:\n  rtkit register /data/ct /data/mr --out reg.dcm\n"
        "  rtkit register /data/ct /data/mr --out reg.dcm --resampled mr_on_ct.nii.gz\n"
        "  rtkit register /data/ct /data/cbct --metric ncc --initial identity --out reg.dcm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("fixed", type=Path, help="folder (or files) of the fixed image series")
    p.add_argument("moving", type=Path, help="folder (or files) of the moving image series")
    p.add_argument("--out", type=Path, help="write the DICOM Spatial Registration here")
    p.add_argument("--resampled", type=Path, help="write the moving image on the fixed grid (.nii/.nii.gz)")
    p.add_argument("--method", choices=("rigid", "affine"), default="rigid", help="transform (default rigid)")
    p.add_argument("--metric", choices=("mi", "ncc", "mse"), default="mi",
                   help="mutual information (default, multimodal), ncc or mse (same modality)")
    p.add_argument("--initial", choices=("centers", "moments", "identity"), default=None,
                   help="start (default: identity in a shared frame of reference, else centers)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--progress", action="store_true", help="log each pyramid level")
    p.set_defaults(func=_cmd_register)

    p = sub.add_parser(
        "gamma",
        help="3-D gamma index of two RT Dose files",
        description="Compare an evaluated dose with a reference dose (Low et al. gamma; see "
        "docs/gamma.md): prints the pass rate and the mean gamma; --out writes the gamma map "
        "(NIfTI, on the reference grid).",
        epilog="examples:\n  rtkit gamma plan_dose.dcm measured.dcm --criteria 3%/3mm\n"
        "  rtkit gamma ref.dcm eval.dcm --criteria 2%/2mm --local --cutoff 10 --out gamma.nii.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", type=Path, help="reference RT Dose file")
    p.add_argument("evaluated", type=Path, help="evaluated RT Dose file (same frame of reference)")
    p.add_argument("--criteria", default="3%/3mm", help="dose %% / distance mm (default 3%%/3mm)")
    p.add_argument("--local", action="store_true", help="local dose criterion (default global)")
    p.add_argument("--cutoff", type=float, default=10.0, help="lower dose cutoff, %% of the reference max (default 10)")
    p.add_argument("--max-gamma", type=float, default=2.0, help="search limit (default 2)")
    p.add_argument("--out", type=Path, help="write the gamma map (.nii/.nii.gz, needs the nifti extra)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_cmd_gamma)

    p = sub.add_parser(
        "cohort",
        help="DVH metrics of many cases (local processes or a Dask cluster), resumable",
        description="Compute DVH metrics for every case of a cohort and append them to a CSV table "
        "(and a Parquet copy when pyarrow is installed) one case at a time: one row per (case, "
        "structure, metric) with its unit. SOURCES is one root folder, whose cases rtkit.scan finds, "
        "or several case folders. Cases run on all usable local cores by default, or on a Dask "
        "cluster (--scheduler). A case that fails becomes a row with its error and the run goes on; "
        "running the same command again resumes where it stopped. Structure names are mapped to "
        "TG-263 names by --structure-map and rtkit's starter map. See docs/cohort.md.",
        epilog="examples:\n"
        '  rtkit cohort /data/cohort --metrics "PTV:D95%,Lung_L:V20Gy[%],Heart:Dmean" --out table.csv\n'
        '  rtkit cohort /data/cohort --metrics "D95%,Dmean" --structures PTV,Heart --out t.csv --workers 8\n'
        '  rtkit cohort /data/p1 /data/p2 /data/p3 --metrics "Heart:Dmean" --out t.csv\n'
        '  rtkit cohort /data/cohort --metrics "Lung_L:V20Gy[%]" --structure-map map.json --out t.csv\n'
        '  rtkit cohort /shared/cohort --metrics "PTV:D95%" --out t.csv --scheduler tcp://10.0.0.5:8786\n'
        '  rtkit cohort /data/cohort --metrics "PTV:D95%" --out trial.csv --max-cases 5\n'
        "\nexit codes: 0 every case computed; 1 some cases failed (listed, and in the table); 2 usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                   help="a root folder of cases, or several case folders")
    p.add_argument("--metrics", required=True,
                   help='comma-separated TG-263 metrics, each optionally for one structure: '
                   '"PTV:D95%%,Lung_L:V20Gy[%%],Heart:Dmean" (a plain metric applies to --structures)')
    p.add_argument("--out", type=Path, required=True, help="the CSV table (appended case by case)")
    p.add_argument("--structures", help="comma-separated structures for the plain metrics "
                   "(default: every non-empty ROI)")
    p.add_argument("--structure-map", type=Path, metavar="MAP",
                   help="JSON (or YAML) file mapping local ROI names to standard names")
    p.add_argument("--workers", type=int, help="local worker processes (default: the usable CPU cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on a Dask cluster, e.g. tcp://host:8786 (needs rtkit[dask])")
    p.add_argument("--prescription", type=float, help="prescription in Gy (default: each case's plan)")
    p.add_argument("--between-planes", choices=("smooth", "slab"), default="smooth",
                   help="surface between contour planes: interpolated (default) or slabs")
    p.add_argument("--max-cases", type=int, metavar="N", help="stop after computing N cases (a trial run)")
    p.add_argument("--no-resume", action="store_true",
                   help="do not continue an existing table (with --overwrite: start afresh)")
    p.add_argument("--overwrite", action="store_true", help="with --no-resume, replace an existing table")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar with ETA (default: when stderr is a terminal)")
    p.set_defaults(func=_cmd_cohort)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rtkit`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    if logging.getLogger().level > logging.DEBUG:
        # pydicom logs every non-conformant value it meets; rtkit reports what matters.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    if logging.getLogger().level >= logging.WARNING:
        # rtkit's warnings are printed once, as "warning: ..." lines, not also as log records
        logging.getLogger("rtkit").setLevel(logging.ERROR)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
        sys.stderr.write(f"warning: {message}\n")

    with warnings.catch_warnings():
        warnings.simplefilter("default", RTKitWarning)
        warnings.showwarning = show
        try:
            return int(args.func(args))
        except (MetricError, CohortError) as exc:
            sys.stderr.write(f"rtkit {args.command}: error: {exc}\n")
            return 2
        except RTKitError as exc:
            sys.stderr.write(f"rtkit {args.command}: error: {exc}\n")
            return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
