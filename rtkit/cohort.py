"""DVH metrics for many cases: local processes or a Dask cluster, resumable.

:func:`run` does the same per-case work as ``rtkit dvh`` over a cohort: load
the case, pick its plan dose and structure set, compute the DVH of each
requested structure (:func:`rtkit.dvh`) and evaluate TG-263 metric strings.
One row per (case, structure, metric), with units.  Cases run in a local
process pool by default (one case per process at a time, so the memory of a
worker is bounded by one case) or on a Dask cluster (``scheduler=``).

Results are appended to a CSV file after each case, so a killed run loses at
most the cases in flight; ``resume=True`` (default) skips the cases already
in the file.  A case that fails (unreadable dose, no structure set, frames
of reference that do not match, ...) becomes a row with ``status="failed"``
and its error, and the run goes on.

See docs/cohort.md for the table's columns, the structure map format and how
to start a Dask cluster.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._optional import require
from .dvh import parse_metric
from .errors import MetricError, MissingDependencyError, RTKitError

__all__ = [
    "COLUMNS",
    "CohortError",
    "CohortResult",
    "StructureMap",
    "StructureMapError",
    "metric_unit",
    "run",
]

log = logging.getLogger(__name__)

#: Columns of the cohort table, in file order.
COLUMNS = ("case", "patient_id", "structure", "roi", "metric", "value", "unit", "status", "error",
           "warnings", "case_rows")

#: Row statuses: a value was computed; the structure is not in the case; it has no contours;
#: the metric is undefined for this case (e.g. % of prescription without one); the case failed.
STATUSES = ("ok", "missing", "empty", "error", "failed")


class CohortError(RTKitError, ValueError):
    """A cohort run cannot start as asked (bad sources, an output that holds other results, ...)."""


class StructureMapError(CohortError):
    """A structure map (dict or file) is malformed."""


# ------------------------------------------------------------------ metrics
def metric_unit(metric: str) -> str:
    """The unit of a TG-263 metric's value.

    Returns
    -------
    str
        ``"Gy"``, ``"cGy"`` or ``"% Rx"`` (percent of the prescription) for
        doses (Dmean, D95%, D2cc, ...); ``"cc"`` (cm3) or ``"% vol"`` (percent
        of the structure's volume) for volumes (V20Gy, V20Gy[%], ...).

    Raises
    ------
    MetricError
        Not a metric string :func:`rtkit.dvh` understands.
    """
    p = parse_metric(metric)
    if p["kind"] == "V":
        return "cc" if p["out"] == "cc" else "% vol"
    return {"Gy": "Gy", "cGy": "cGy", "%": "% Rx"}[p["out"]]


def _parse_requests(metrics: str | Sequence[str] | Mapping[str, Sequence[str]]) -> list[tuple[str | None, str]]:
    """``[(structure or None, metric)]`` from "D95%", "PTV:D95%" strings or {structure: [metrics]}."""
    items: list[tuple[str | None, str]] = []
    if isinstance(metrics, Mapping):
        for roi, ms in metrics.items():
            for m in ([ms] if isinstance(ms, str) else ms):
                items.append((str(roi).strip() or None, str(m).strip()))
    else:
        if isinstance(metrics, str):
            metrics = metrics.split(",")
        for m in metrics:
            m = str(m).strip()
            if not m:
                continue
            roi, sep, metric = m.rpartition(":")
            items.append(((roi.strip() or None) if sep else None, metric.strip()))
    if not items:
        raise MetricError("no DVH metrics given; e.g. metrics=['PTV:D95%', 'Lung_L:V20Gy[%]', 'Dmean']")
    for _, m in items:
        parse_metric(m)  # MetricError with the accepted forms, before any work
    out: list[tuple[str | None, str]] = []
    for it in items:
        if it not in out:
            out.append(it)
    return out


# ------------------------------------------------------------------ structure map
_SEP = re.compile(r"[\s_\-.]+")


def _norm(name: str) -> str:
    """Case-folded, with runs of spaces, underscores, hyphens and dots as one space."""
    return _SEP.sub(" ", str(name).strip().casefold()).strip()


class StructureMap:
    """Maps local structure names to standard (TG-263) names.

    Parameters
    ----------
    mapping : dict, str or path-like, optional
        Either ``{standard: [alias, ...]}`` (a list value) or
        ``{alias: standard}`` (a string value); both forms may be mixed.  A
        path names a JSON file holding such a dict (YAML when the name ends
        in ``.yaml``/``.yml`` and PyYAML is installed).  Aliases are compared
        case-insensitively, with runs of spaces, underscores, hyphens and dots
        treated alike (``"Lt  Lung"`` == ``"lt_lung"``); an alias written
        ``"re:<pattern>"`` is a regular expression matched against the whole
        local name, ignoring case.
    builtin : bool
        Also use the starter map of common TG-263 names
        (:data:`rtkit._tg263.STARTER_MAP`), after the user's entries.

    Notes
    -----
    :meth:`standard` looks, in order, at the user's plain aliases, the user's
    regular expressions (in the order given), the standard names themselves
    (the user's, then the starter map's), the starter map's plain aliases and
    its regular expressions.  A name nothing matches stays as it is.

    Examples
    --------
    >>> m = StructureMap({"Lung_L": ["Lt Lung", "re:lung[ _]?l(ef)?t?"]})
    >>> m.standard("LT LUNG"), m.standard("lung_lt"), m.standard("Heart"), m.standard("Tumour")
    ('Lung_L', 'Lung_L', 'Heart', 'Tumour')
    """

    def __init__(self, mapping: Mapping[str, Any] | str | os.PathLike[str] | None = None, *,
                 builtin: bool = True) -> None:
        self.source = None if mapping is None or isinstance(mapping, Mapping) else str(mapping)
        if mapping is not None and not isinstance(mapping, Mapping):
            mapping = _read_map_file(Path(mapping))
        self.mapping: dict[str, list[str]] = _standard_form(mapping or {}, self.source or "structure map")
        self.builtin = builtin
        self._compile()

    def _compile(self) -> None:
        from ._tg263 import STARTER_MAP

        def tables(m: Mapping[str, list[str]], label: str):
            plain: dict[str, str] = {}
            regex: list[tuple[re.Pattern[str], str]] = []
            for std, aliases in m.items():
                for a in aliases:
                    if a.startswith("re:"):
                        try:
                            regex.append((re.compile(a[3:], re.IGNORECASE), std))
                        except re.error as exc:
                            raise StructureMapError(f"{label}: alias {a!r} of {std!r} is not a valid "
                                                    f"regular expression: {exc}") from None
                    else:
                        plain.setdefault(_norm(a), std)
            return plain, regex, {_norm(s): s for s in m}

        self._user = tables(self.mapping, self.source or "structure map")
        self._starter = tables(STARTER_MAP, "rtkit starter map") if self.builtin else ({}, [], {})

    def __getstate__(self) -> dict[str, Any]:  # compiled tables are rebuilt on unpickling
        return {"source": self.source, "mapping": self.mapping, "builtin": self.builtin}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile()

    def match(self, name: str) -> tuple[str, str]:
        """``(standard name, how)``: how is "alias", "regex", "standard", "starter", "starter regex" or "none"."""
        key = _norm(name)
        uplain, uregex, ustd = self._user
        splain, sregex, sstd = self._starter
        if key in uplain:
            return uplain[key], "alias"
        for pat, std in uregex:
            if pat.fullmatch(str(name).strip()):
                return std, "regex"
        if key in ustd:
            return ustd[key], "standard"
        if key in sstd:
            return sstd[key], "standard"
        if key in splain:
            return splain[key], "starter"
        for pat, std in sregex:
            if pat.fullmatch(str(name).strip()):
                return std, "starter regex"
        return str(name), "none"

    def standard(self, name: str) -> str:
        """The standard name of local structure ``name`` (``name`` itself when nothing matches)."""
        return self.match(name)[0]

    def __call__(self, name: str) -> str:
        return self.standard(name)

    def resolve(self, names: Iterable[str], requested: Iterable[str] = ()) -> dict[str, list[str]]:
        """``{standard name: [local names]}`` for the ROI names of one case, in their order.

        A local name that the map does not know but that equals one of
        ``requested`` (ignoring case and separators) takes the requested
        spelling.  When several local names map to one standard name, the one
        whose own name is the standard name comes first.
        """
        wanted = {_norm(r): r for r in requested}
        out: dict[str, list[str]] = {}
        for n in names:
            std, how = self.match(n)
            if how == "none":
                std = wanted.get(_norm(n), std)
            out.setdefault(std, []).append(n)
        for std, locals_ in out.items():
            own = _norm(std)
            locals_.sort(key=lambda n: 0 if _norm(n) == own else 1)  # noqa: B023 - sorted right here
        return out

    def __repr__(self) -> str:
        src = f"{self.source!r}, " if self.source else ""
        return f"StructureMap({src}{len(self.mapping)} user entries, builtin={self.builtin})"


def _standard_form(mapping: Mapping[str, Any], label: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in mapping.items():
        if isinstance(value, str):  # alias -> standard
            out.setdefault(value, []).append(str(key))
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out.setdefault(str(key), []).extend(value)
        else:
            raise StructureMapError(
                f"{label}: entry {key!r} must map a standard name to a list of aliases "
                f'({{"Lung_L": ["Lt Lung", "re:left.*lung"]}}) or an alias to a standard name '
                f'({{"Lt Lung": "Lung_L"}}); got {type(value).__name__}')
    return out


def _read_map_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StructureMapError(f"structure map {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise MissingDependencyError(f"structure map {path}: reading YAML needs PyYAML "
                                         "(pip install pyyaml), or write the map as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise StructureMapError(f"structure map {path} is not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StructureMapError(f"structure map {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StructureMapError(f"structure map {path} must hold a mapping (a JSON object), "
                                f"not a {type(data).__name__}")
    return data


# ------------------------------------------------------------------ tasks (run in workers)
@dataclass(frozen=True)
class _Task:
    """One case's work: everything a worker needs, small and picklable."""

    case: str
    paths: tuple[str, ...]
    from_files: bool  # paths are the case's files (found by the parent's scan), else one folder
    requests: tuple[tuple[str | None, str], ...]
    structures: tuple[str, ...] | None
    structure_map: StructureMap
    prescription_gy: float | None
    between_planes: str
    strict: bool
    patient_id: str = ""
    notes: tuple[str, ...] = ()


def _run_case(task: _Task) -> dict[str, Any]:
    """Load one case and compute its rows; never raises (a failure is a result)."""
    from . import config

    start, cpu = time.perf_counter(), time.process_time()
    saved = config.strict
    config.strict = task.strict
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                patient, rows = _case_rows(task)
                failure = None
            except Exception as exc:  # noqa: BLE001 - a failing case is recorded, the run goes on
                patient, rows = task.patient_id, []
                failure = _describe(exc, task)
    finally:
        config.strict = saved
    messages = []
    for w in caught:
        text = str(w.message)
        if text not in messages:
            messages.append(text)
    return {"case": task.case, "patient_id": patient, "rows": rows, "failure": failure,
            "warnings": messages, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu, "pid": os.getpid()}


def _describe(exc: BaseException, task: _Task) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if not isinstance(exc, RTKitError):  # not one of rtkit's reported errors: say where it came from
        frame = traceback.extract_tb(exc.__traceback__)[-1:] or None
        if frame:
            text += f" (at {Path(frame[0].filename).name}:{frame[0].lineno})"
    if task.notes:
        text += " [" + "; ".join(task.notes) + "]"
    return " ".join(text.split())  # one line: the error is a CSV cell


def _case_rows(task: _Task) -> tuple[str, list[dict[str, Any]]]:
    from .dvh import dvh
    from .io.case import load

    case = load(list(task.paths) if task.from_files else task.paths[0])
    patient = case.patient_id or ""
    ss = case.structures
    if ss is None:
        raise CohortError(f"case {task.case}: no RT Structure Set in the case")
    dose = case.dose
    if dose is None:
        raise CohortError(f"case {task.case}: no plan dose (RT Dose) in the case")
    dose.array  # noqa: B018 - read (and check) the pixel data before any DVH
    rx = task.prescription_gy
    if rx is None and case.plan is not None:
        rx = case.plan.prescription_gy
    smap = task.structure_map
    requested = [smap.standard(r) for r, _ in task.requests if r is not None] + [
        smap.standard(s) for s in (task.structures or ())]
    found = smap.resolve(ss.names, requested)

    # structures to report: the requested list (or every non-empty ROI), then those of "ROI:metric"
    plain = [m for roi, m in task.requests if roi is None]
    order: list[str] = []
    if plain:
        if task.structures is not None:
            order = list(dict.fromkeys(smap.standard(s) for s in task.structures))
        else:
            for std, locals_ in found.items():
                for i, local in enumerate(locals_):
                    if not ss[local].is_empty:
                        order.append(std if i == 0 else local)
    with_plain = set(order)
    for roi, _ in task.requests:
        if roi is not None and smap.standard(roi) not in order:
            order.append(smap.standard(roi))
    picked: dict[str, list[str]] = {}
    for std in order:
        ms = list(plain) if std in with_plain else []
        ms += [m for roi, m in task.requests if roi is not None and smap.standard(roi) == std]
        picked[std] = list(dict.fromkeys(ms))

    rows: list[dict[str, Any]] = []
    for std, ms in picked.items():
        local = _local_name(std, found, ss)
        if local is None:
            for m in ms:
                rows.append(_row(std, "", m, math.nan, "missing",
                                 f"no ROI maps to {std!r}; the case has: {', '.join(ss.names)}"))
            continue
        roi = ss[local]
        if roi.is_empty:
            for m in ms:
                rows.append(_row(std, local, m, math.nan, "empty", f"ROI {local!r} has no contours"))
            continue
        h = dvh(dose, roi, name=local, prescription_gy=rx, between_planes=task.between_planes)
        for m in ms:
            try:
                rows.append(_row(std, local, m, float(h.metric(m)), "ok", ""))
            except MetricError as exc:  # e.g. % of prescription without one: this row only
                rows.append(_row(std, local, m, math.nan, "error", str(exc)))
    return patient, rows


def _local_name(std: str, found: Mapping[str, list[str]], ss: Any) -> str | None:
    if std in found:
        return found[std][0]
    for s in found:  # a local name kept as is (no map entry): exact or case-insensitive
        for local in found[s]:
            if local == std or local.casefold() == std.casefold():
                return local
    return None


def _row(structure: str, roi: str, metric: str, value: float, status: str, error: str) -> dict[str, Any]:
    return {"structure": structure, "roi": roi, "metric": metric, "value": value,
            "unit": metric_unit(metric), "status": status, "error": error}


# ------------------------------------------------------------------ sources
def _tasks(sources: Any, requests: list[tuple[str | None, str]], structures: Sequence[str] | None,
           smap: StructureMap, prescription_gy: float | None, between_planes: str,
           progress: bool) -> list[_Task]:
    from . import config

    common = {"requests": tuple(requests), "structures": None if structures is None else tuple(structures),
              "structure_map": smap, "prescription_gy": prescription_gy,
              "between_planes": between_planes, "strict": bool(config.strict)}
    if isinstance(sources, (str, os.PathLike)):
        return _tasks_from_root(Path(sources), common, progress)
    folders = [Path(s) for s in sources]
    if not folders:
        raise CohortError("no sources: give a root folder or a list of case folders")
    for f in folders:
        if not f.exists():
            raise CohortError(f"case folder {f}: no such file or folder")
    ids = _folder_ids(folders)
    if len(set(ids)) != len(ids):
        raise CohortError("the same case folder is listed twice: "
                          + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
    return [_Task(case=i, paths=(str(f.resolve()),), from_files=False, **common) for i, f in zip(ids, folders, strict=True)]


def _folder_ids(folders: Sequence[Path]) -> list[str]:
    """Case IDs of case folders: the folder names if unique, else paths from their common parent."""
    names = [f.resolve().name for f in folders]
    if len(set(names)) == len(names):
        return names
    full = [f.resolve() for f in folders]
    base = Path(os.path.commonpath([str(p) for p in full]))
    return [p.relative_to(base).as_posix() or p.name for p in full]


def _tasks_from_root(root: Path, common: dict[str, Any], progress: bool) -> list[_Task]:
    from .io.scan import scan

    if not root.is_dir():
        raise CohortError(f"cohort root {root}: not a folder (give a folder, or a list of case folders)")
    index = scan(root, progress=progress)
    cases = index.cases()
    if not cases:
        raise CohortError(f"cohort root {root}: no case found ({len(index.skipped)} non-DICOM, "
                          f"{len(index.unreadable)} unreadable files)")
    unreadable: dict[Path, list[str]] = {}
    for p, _why in index.unreadable:
        unreadable.setdefault(p.resolve().parent, []).append(p.name)
    base = root.resolve()
    tasks, seen = [], {}
    for c in cases:
        files = [i.path for s in c.image_series for i in s.instances] + [i.path for i in c.rt_instances]
        folders = sorted({Path(f).resolve().parent for f in files})
        top = Path(os.path.commonpath([str(f) for f in folders])) if folders else base
        try:
            cid = top.relative_to(base).as_posix()
        except ValueError:
            cid = top.as_posix()
        cid = root.resolve().name if cid in ("", ".") else cid
        notes = tuple(f"unreadable file(s) in {d.name}: {', '.join(sorted(n)[:5])}"
                      for d, n in unreadable.items() if d in folders or d == top)
        seen.setdefault(cid, []).append(len(tasks))
        tasks.append(_Task(case=cid, paths=tuple(str(Path(f).resolve()) for f in files), from_files=True,
                           patient_id=c.patient_id or "", notes=notes, **common))
    for cid, where in seen.items():  # several cases in one folder: tell them apart
        if len(where) > 1:
            for k in where:
                t = tasks[k]
                ct = cases[k].ct_series
                tag = ct.series_instance_uid if ct is not None and ct.series_instance_uid else str(k)
                tasks[k] = _replace(t, case=f"{cid}#{t.patient_id or '?'}/{tag}")
    return tasks


def _replace(task: _Task, **changes: Any) -> _Task:
    from dataclasses import replace

    return replace(task, **changes)


# ------------------------------------------------------------------ the table on disk
def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row in the table's types: strings, ``value`` float, ``case_rows`` int."""
    out: dict[str, Any] = {}
    for c in COLUMNS:
        v = row.get(c)
        if c == "value":
            out[c] = math.nan if v in (None, "") else float(v)
        elif c == "case_rows":
            out[c] = int(v) if v not in (None, "") else 0
        else:
            out[c] = "" if v is None else str(v)
    return out


def _outcome_rows(outcome: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one case's outcome (one ``failed`` row when it failed)."""
    base = {"case": outcome["case"], "patient_id": outcome.get("patient_id") or ""}
    notes = outcome.get("warnings") or []
    if outcome.get("failure"):
        rows = [{**base, "structure": "", "roi": "", "metric": "", "value": math.nan, "unit": "",
                 "status": "failed", "error": outcome["failure"], "warnings": " | ".join(notes)}]
    else:
        rows = []
        for r in outcome["rows"]:
            mine = [w for w in notes if r["roi"] and f"'{r['roi']}'" in w]
            general = [w for w in notes if not any(f"'{x['roi']}'" in w for x in outcome["rows"] if x["roi"])]
            rows.append({**base, **r, "warnings": " | ".join(mine + general)})
        if not rows:  # nothing to report for this case: keep a marker so that it counts as done
            rows = [{**base, "structure": "", "roi": "", "metric": "", "value": math.nan, "unit": "",
                     "status": "missing", "error": "no requested structure in the case",
                     "warnings": " | ".join(notes)}]
    return [_clean({**r, "case_rows": len(rows)}) for r in rows]


def _format(rows: Sequence[Mapping[str, Any]], header: bool) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if k == "value" else v) for k, v in r.items()})
    return buf.getvalue().encode("utf-8")


class _Table:
    """The CSV file: read what a previous run finished, append a case's rows in one write."""

    def __init__(self, path: Path, *, resume: bool, overwrite: bool) -> None:
        self.path = path
        self.done: dict[str, list[dict[str, Any]]] = {}
        if path.exists() and path.stat().st_size > 0:
            if resume:
                self._load()
            elif not overwrite:
                from .errors import OutputExistsError

                raise OutputExistsError(f"{path} already exists; resume=True continues it, overwrite=True "
                                        "(--overwrite) replaces it")
            else:
                path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists() or path.stat().st_size == 0
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if fresh:
            self._write(_format([], header=True))

    def _load(self) -> None:
        raw = self.path.read_bytes()
        text = raw.decode("utf-8")
        complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]  # a torn last line
        reader = csv.DictReader(io.StringIO(complete))
        if reader.fieldnames is None or tuple(reader.fieldnames) != COLUMNS:
            raise CohortError(f"{self.path} is not an rtkit cohort table (columns {reader.fieldnames}); "
                              "give another --out, or overwrite=True to replace it")
        by_case: dict[str, list[dict[str, Any]]] = {}
        for r in reader:
            try:
                row = _clean(r)
            except (TypeError, ValueError):
                continue  # a damaged line: its case is redone
            by_case.setdefault(row["case"], []).append(row)
        kept, dropped = {}, []
        for cid, rows in by_case.items():
            if rows and all(r["case_rows"] == len(rows) for r in rows):
                kept[cid] = rows
            else:
                dropped.append(cid)
        if dropped or complete != text:
            log.warning("%s: %d case(s) were cut short by an interrupted run (%s); they are redone",
                        self.path, len(dropped), ", ".join(dropped[:5]) or "a torn last line")
            self._rewrite([r for rows in kept.values() for r in rows])
        self.done = kept

    def _rewrite(self, rows: Sequence[Mapping[str, Any]]) -> None:
        from ._atomic import atomic_path

        with atomic_path(self.path, overwrite=True) as tmp:
            tmp.write_bytes(_format(rows, header=True))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # one write for a case's block in practice; loop for the rare short write
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self._write(_format(rows, header=False))

    def finish(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Close; rewrite the file in case order (atomically) when given the full table."""
        os.close(self._fd)
        self._fd = -1
        self._rewrite(rows)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> bool:
    """Write ``rows`` as Parquet (atomically) if pyarrow is installed; True when written."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False
    from ._atomic import atomic_path

    schema = pa.schema([(c, pa.float64() if c == "value" else pa.int64() if c == "case_rows" else pa.string())
                        for c in COLUMNS])
    table = pa.Table.from_pylist([dict(r) for r in rows], schema=schema)
    with atomic_path(path, overwrite=True) as tmp:
        pq.write_table(table, tmp)
    return True


# ------------------------------------------------------------------ result
@dataclass
class CohortResult:
    """What :func:`run` returns.

    Attributes
    ----------
    rows : list of dict
        One per (case, structure, metric) with ``case``, ``patient_id``,
        ``structure`` (standard name), ``roi`` (the case's own name),
        ``metric``, ``value`` (float; NaN unless ``status == "ok"``), ``unit``
        (see :func:`metric_unit`), ``status`` ("ok", "missing", "empty",
        "error"), ``error`` and ``warnings`` (text), in case order.  Failed
        cases are not here but in :attr:`failures`.
    failures : list of dict
        One per failed case: ``case``, ``patient_id``, ``error`` (the
        exception type and message), ``warnings``.
    cases : list of str
        Every case ID of the cohort, in source order.
    computed : int
        Cases computed by this call.
    skipped : int
        Cases found already finished in ``out`` (``resume=True``).
    complete : bool
        False when the run stopped early (``max_cases``, an interruption).
    seconds : float
        Wall time of this call (s).
    out, parquet : Path or None
        The CSV table, and its Parquet copy (when pyarrow is installed).
    warnings : dict
        Case ID -> warnings raised while computing it (this call only).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    cases: list[str] = field(default_factory=list)
    computed: int = 0
    skipped: int = 0
    complete: bool = True
    seconds: float = 0.0
    out: Path | None = None
    parquet: Path | None = None
    warnings: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No case failed."""
        return not self.failures

    @property
    def table(self) -> list[dict[str, Any]]:
        """Every row as in the CSV, failed cases included (``status == "failed"``)."""
        return _merge(self.rows, [_clean({**f, "status": "failed", "case_rows": 1}) for f in self.failures],
                      self.cases)

    def to_pandas(self, failures: bool = False) -> Any:
        """:attr:`rows` (with ``failures=True``: :attr:`table`) as a pandas DataFrame (needs pandas)."""
        pd = require("pandas", "table", "CohortResult.to_pandas")
        data = self.table if failures else self.rows
        return pd.DataFrame(data, columns=list(COLUMNS))

    def __repr__(self) -> str:
        return (f"CohortResult({len(self.cases)} cases, {len(self.rows)} rows, {len(self.failures)} failed, "
                f"{self.computed} computed, {self.skipped} resumed{'' if self.complete else ', incomplete'})")


def _merge(rows: Sequence[Mapping[str, Any]], extra: Sequence[Mapping[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    rank = {c: i for i, c in enumerate(order)}
    allrows = [dict(r) for r in rows] + [dict(r) for r in extra]
    idx = sorted(range(len(allrows)), key=lambda i: (rank.get(allrows[i]["case"], len(rank)), allrows[i]["case"], i))
    return [allrows[i] for i in idx]


# ------------------------------------------------------------------ progress
class _Progress:
    """tqdm when installed (and ``enabled``), else a log line every ``every`` seconds."""

    def __init__(self, total: int, done: int, enabled: bool, every: float = 10.0) -> None:
        self.total, self.done, self.failed = total, done, 0
        self.start, self.every, self.last = time.monotonic(), every, time.monotonic()
        self.first = done
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=done, unit="case", desc="cohort", file=sys.stderr,
                                dynamic_ncols=True)
            except ImportError:
                log.info("tqdm is not installed (pip install 'rtkit[progress]'): progress goes to the log")

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += bool(failed)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(failed=self.failed, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            rate = (self.done - self.first) / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            log.info("cohort: %d/%d cases, %d failed, %.1f cases/min, ETA %s", self.done, self.total,
                     self.failed, rate * 60, _hms(eta))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}"


# ------------------------------------------------------------------ executors
def usable_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _serial(tasks: Sequence[_Task]) -> Iterator[dict[str, Any]]:
    for t in tasks:
        yield _run_case(t)


def _pool(tasks: Sequence[_Task], workers: int) -> Iterator[dict[str, Any]]:
    """A local process pool, at most 2 cases queued per worker.

    When a worker process dies (killed, out of memory, a crash in native
    code), the pool is rebuilt and the cases that were in flight are rerun
    one at a time in a pool of their own, so that only the case that kills
    its worker fails.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    methods = mp.get_all_start_methods()
    ctx = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["rtkit.cohort"])
    queue = list(reversed(tasks))
    suspects: list[_Task] = []  # in flight when a worker died
    while queue or suspects:
        alone = bool(suspects)
        source = suspects if alone else queue
        n = 1 if alone else workers
        pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
        running: dict[Any, _Task] = {}
        broken = False
        try:
            while (source or running) and not broken:
                while source and len(running) < (1 if alone else 2 * n):
                    t = source.pop()
                    try:
                        running[pool.submit(_run_case, t)] = t
                    except BrokenProcessPool:
                        source.append(t)
                        broken = True
                        break
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    t = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        if alone:
                            yield _crashed(t, "the worker process died while computing this case "
                                              "(killed, out of memory, or a crash in native code)")
                        else:
                            suspects.append(t)
                        broken = True
                        continue
                    yield outcome
            if broken:
                suspects.extend(running.values())
                running.clear()
                if not alone:
                    log.warning("a cohort worker process died; the %d case(s) in flight are rerun one "
                                "at a time", len(suspects))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _crashed(task: _Task, why: str) -> dict[str, Any]:
    return {"case": task.case, "patient_id": task.patient_id, "rows": [], "failure": f"WorkerError: {why}",
            "warnings": [], "seconds": 0.0, "cpu_seconds": 0.0, "pid": None}


def _dask(tasks: Sequence[_Task], scheduler: Any) -> Iterator[dict[str, Any]]:
    """The same task function on a Dask cluster (an address or a Client)."""
    distributed = require("distributed", "dask", "Running a cohort on a Dask cluster")
    own = isinstance(scheduler, str)
    client = distributed.Client(scheduler, set_as_default=False) if own else scheduler
    try:
        nthreads = sum(client.nthreads().values()) or 1
        queue = list(reversed(tasks))
        by_key: dict[str, _Task] = {}
        pending: dict[str, Any] = {}
        run_id = uuid.uuid4().hex[:8]
        counter = iter(range(len(queue)))

        def submit() -> Any:
            t = queue.pop()
            key = f"rtkit-cohort-{run_id}-{next(counter)}"
            by_key[key] = t
            pending[key] = client.submit(_run_case, t, key=key, pure=False, retries=0)
            return pending[key]

        first = [submit() for _ in range(min(len(queue), 2 * nthreads))]
        if not first:
            return
        ac = distributed.as_completed(first, loop=client.loop)
        for fut in ac:
            t = by_key.pop(fut.key)
            pending.pop(fut.key, None)
            if fut.status == "finished":
                outcome = fut.result()
            else:
                try:
                    exc = fut.exception()
                except Exception as err:  # noqa: BLE001 - e.g. the scheduler went away
                    exc = err
                outcome = _crashed(t, f"the Dask task failed: {type(exc).__name__}: {exc}")
            fut.release()
            yield outcome
            if queue:
                ac.add(submit())
    finally:
        if pending:  # left early: cancel what has not run
            client.cancel(list(pending.values()))
        if own:
            client.close()


# ------------------------------------------------------------------ run
def run(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    metrics: str | Sequence[str] | Mapping[str, Sequence[str]],
    *,
    structures: Sequence[str] | None = None,
    structure_map: StructureMap | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    workers: int | None = None,
    scheduler: Any = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    overwrite: bool = False,
    prescription_gy: float | None = None,
    between_planes: str = "smooth",
    progress: bool | None = None,
    max_cases: int | None = None,
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> CohortResult:
    """DVH metrics of every case of a cohort, one row per (case, structure, metric).

    Parameters
    ----------
    sources : path-like or sequence of path-like
        A root folder, whose cases :func:`rtkit.scan` finds (one per planning
        CT; the case ID is the folder holding its files, relative to the
        root), or a list of case folders, each holding one case (the case ID
        is the folder name; each folder is scanned by the worker).
    metrics : str, sequence of str, or mapping
        TG-263 metric strings (``"D95%"``, ``"V20Gy[%]"``, ``"Dmean"``, see
        :mod:`rtkit.dvh`).  ``"PTV:D95%"`` asks for one structure's metric;
        a plain metric applies to every structure in ``structures`` (default:
        every non-empty ROI of each case).  A comma-separated string and
        ``{"PTV": ["D95%"], "Heart": ["Dmean"]}`` are accepted too.
    structures : sequence of str, optional
        Structures (standard names, or names the map resolves) for the plain
        metrics.
    structure_map : StructureMap, dict, or path of a JSON/YAML file, optional
        Local -> standard names (see :class:`StructureMap`); the built-in
        starter map of common TG-263 names is always consulted after it.
    workers : int, optional
        Local worker processes (default: the usable CPU cores).  ``1`` runs
        the cases one after the other in this process.  Ignored with
        ``scheduler``.
    scheduler : str or dask.distributed.Client, optional
        Run on a Dask cluster: a scheduler address (``"tcp://host:8786"``) or
        a connected Client.  Workers must have rtkit installed and see the
        case files under the same paths.
    out : path-like, optional
        The CSV table, appended after every case (and a Parquet copy beside
        it, ``.parquet``, when pyarrow is installed, rewritten every 50 cases
        or 60 s and at the end).  When the run finishes, the CSV is rewritten
        in case order.
    resume : bool
        If ``out`` exists, keep its finished cases (failed ones included) and
        compute only the others.  Cases cut short by an interrupted run are
        redone.
    overwrite : bool
        With ``resume=False``, replace an existing ``out`` (otherwise an
        :class:`~rtkit.errors.OutputExistsError`).
    prescription_gy : float, optional
        For metrics in % of prescription (default: each case's plan).
    between_planes : {"smooth", "slab"}
        Passed to :func:`rtkit.dvh`.
    progress : bool, optional
        A progress bar with ETA (tqdm; without it, a log line every 10 s).
        Default: when stderr is a terminal.
    max_cases : int, optional
        Stop after computing this many cases (a trial run; resume later).
    on_case : callable, optional
        Called in this process with each case's outcome (a dict with
        ``case``, ``rows``, ``failure``, ``warnings``, ``seconds`` (wall) and
        ``cpu_seconds`` (the worker's CPU time for the case)) after its rows are
        written.  An exception raised there stops the run (the file keeps
        what was written).

    Returns
    -------
    CohortResult
        Rows of every case in ``out`` (previous runs included) and of this
        run, and the failed cases.

    Raises
    ------
    MetricError
        A metric string is not understood (before any work).
    StructureMapError, CohortError
        A malformed structure map, missing sources, or ``out`` that is not a
        cohort table.
    MissingDependencyError
        ``scheduler`` given but dask.distributed is not installed
        (``pip install 'rtkit[dask]'``).

    Notes
    -----
    Every case runs :func:`rtkit.load` on its files, takes ``case.dose`` and
    ``case.structures`` and computes :func:`rtkit.dvh` of each structure
    needed, so its values are those of a single-case call.  Any exception in
    a case (rtkit's or not) fails that case only; its row holds the
    exception type and message.  A case is written in one block with its
    row count (``case_rows``), which lets ``resume`` recognise a block cut
    short by a kill.
    """
    start = time.perf_counter()
    requests = _parse_requests(metrics)
    if between_planes not in ("smooth", "slab"):
        raise CohortError(f"between_planes must be 'smooth' or 'slab', not {between_planes!r}")
    smap = structure_map if isinstance(structure_map, StructureMap) else StructureMap(structure_map)
    if workers is not None and int(workers) < 1:
        raise CohortError(f"workers must be at least 1, not {workers}")
    if max_cases is not None and int(max_cases) < 0:
        raise CohortError(f"max_cases must be >= 0, not {max_cases}")
    if progress is None:
        progress = sys.stderr.isatty()
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.suffix.lower() == ".parquet":
        raise CohortError(f"out={out_path}: give the CSV name (e.g. table.csv); the Parquet copy is written "
                          "beside it")
    tasks = _tasks(sources, requests, structures, smap, prescription_gy, between_planes, progress)
    order = [t.case for t in tasks]

    table = _Table(out_path, resume=resume, overwrite=overwrite) if out_path is not None else None
    previous = dict(table.done) if table is not None else {}
    if previous:
        _check_same_request(out_path, previous, requests)
    todo = [t for t in tasks if t.case not in previous]
    if max_cases is not None:
        todo = todo[: int(max_cases)]
    result = CohortResult(cases=order, out=out_path, skipped=sum(1 for c in order if c in previous))
    rows_by_case: dict[str, list[dict[str, Any]]] = {c: list(r) for c, r in previous.items()}
    parquet = out_path.with_suffix(".parquet") if out_path is not None else None
    n_workers = usable_cores() if workers is None else int(workers)
    if scheduler is not None:
        outcomes = _dask(todo, scheduler)
        where = "a Dask cluster"
    elif n_workers == 1 or len(todo) <= 1:
        outcomes = _serial(todo)
        where = "this process"
    else:
        outcomes = _pool(todo, min(n_workers, len(todo)))
        where = f"{min(n_workers, len(todo))} local processes"
    log.info("cohort: %d cases (%d already in %s), %d to compute on %s", len(order), len(previous),
             out_path, len(todo), where)
    bar = _Progress(len(todo) + 0, 0, progress) if todo else None
    last_snapshot, since_snapshot = time.monotonic(), 0
    finished_all = False
    try:
        for outcome in outcomes:
            rows = _outcome_rows(outcome)
            if table is not None:
                table.append(rows)
            rows_by_case[outcome["case"]] = rows
            result.computed += 1
            if outcome["warnings"]:
                result.warnings[outcome["case"]] = list(outcome["warnings"])
                for w in outcome["warnings"]:
                    log.info("case %s: %s", outcome["case"], w)
            if outcome["failure"]:
                log.warning("case %s failed: %s", outcome["case"], outcome["failure"])
            if bar is not None:
                bar.update(bool(outcome["failure"]))
            since_snapshot += 1
            if parquet is not None and (since_snapshot >= 50 or time.monotonic() - last_snapshot > 60):
                _write_parquet(parquet, _merge([r for rs in rows_by_case.values() for r in rs], [], order))
                last_snapshot, since_snapshot = time.monotonic(), 0
            if on_case is not None:
                on_case(outcome)
        finished_all = True
    finally:
        if bar is not None:
            bar.close()
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()  # stop a pool or Dask generator left early
        everything = _merge([r for rs in rows_by_case.values() for r in rs], [], order)
        if table is not None:
            if finished_all:
                table.finish(everything)  # in case order
            else:
                table.close()
        if parquet is not None and (finished_all or result.computed):
            result.parquet = parquet if _write_parquet(parquet, everything) else None

    result.complete = finished_all and all(c in rows_by_case for c in order)
    for r in everything:
        if r["status"] == "failed":
            result.failures.append({"case": r["case"], "patient_id": r["patient_id"], "error": r["error"],
                                    "warnings": r["warnings"]})
        else:
            result.rows.append(r)
    extra = sorted(set(previous) - set(order))
    if extra:
        log.warning("%s holds %d case(s) not among the sources (%s); they are kept", out_path, len(extra),
                    ", ".join(extra[:5]))
    result.seconds = time.perf_counter() - start
    return result


def _check_same_request(path: Path | None, previous: Mapping[str, list[dict[str, Any]]],
                        requests: Sequence[tuple[str | None, str]]) -> None:
    """Refuse to resume a table made for other metrics (the result would mix two requests)."""
    asked = {m for _, m in requests}
    have = {r["metric"] for rows in previous.values() for r in rows if r["status"] != "failed" and r["metric"]}
    if have and have != asked:
        raise CohortError(f"{path} holds results for the metrics {sorted(have)}, not the {sorted(asked)} asked "
                          "for now; give another out, resume=False with overwrite=True, or the same metrics")
