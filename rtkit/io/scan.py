"""Index a folder of DICOM files by reading headers only."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._optional import require
from ..errors import DicomReadError, RTKitError, warn
from ._dicom import (
    DICOMDIR_SOP,
    IMAGE_MODALITIES,
    Instance,
    NotDicomError,
    guard_decoding,
    make_instance,
    open_dataset,
    sop_class_uid,
)

if TYPE_CHECKING:
    from .case import Case

__all__ = ["scan", "Index", "Series", "Study", "Patient"]

log = logging.getLogger("rtkit.io")


@dataclass
class Series:
    """One DICOM series: the instances sharing a SeriesInstanceUID and modality.

    Attributes
    ----------
    series_instance_uid : str or None
    modality : str
        From the SOP Class UID where known (the Modality tag can be wrong).
    instances : list of Instance
        Header records, one per file.
    """

    series_instance_uid: str | None
    modality: str
    instances: list[Instance] = field(default_factory=list)

    def _first(self, attr: str) -> str | None:
        for inst in self.instances:
            v = getattr(inst, attr)
            if v:
                return v
        return None

    @property
    def patient_id(self) -> str | None:
        return self._first("patient_id")

    @property
    def patient_name(self) -> str | None:
        return self._first("patient_name")

    @property
    def study_instance_uid(self) -> str | None:
        return self._first("study_instance_uid")

    @property
    def description(self) -> str | None:
        """SeriesDescription (or the RT label when there is none)."""
        return self._first("series_description") or self._first("label")

    @property
    def frame_of_reference_uid(self) -> str | None:
        """The series' FrameOfReferenceUID, else the one it refers to (RT Structure Sets)."""
        own = self._first("frame_of_reference_uid")
        if own:
            return own
        ref = sorted(self.referenced_frames)
        return ref[0] if len(ref) == 1 else None

    @property
    def files(self) -> list[Path]:
        return [i.path for i in self.instances]

    @property
    def sop_instance_uids(self) -> set[str]:
        return {i.sop_instance_uid for i in self.instances if i.sop_instance_uid}

    @property
    def referenced_frames(self) -> set[str]:
        return set().union(*(i.referenced_frames for i in self.instances))

    @property
    def referenced_series(self) -> set[str]:
        return set().union(*(i.referenced_series for i in self.instances))

    @property
    def referenced_instances(self) -> set[str]:
        return set().union(*(i.referenced_instances for i in self.instances))

    @property
    def frames(self) -> set[str]:
        """Every frame of reference this series is in or refers to."""
        own = {i.frame_of_reference_uid for i in self.instances if i.frame_of_reference_uid}
        return own | self.referenced_frames

    @property
    def is_image(self) -> bool:
        return self.modality in IMAGE_MODALITIES

    def __len__(self) -> int:
        return len(self.instances)

    def __repr__(self) -> str:
        d = f" '{self.description}'" if self.description else ""
        return f"Series({self.modality}{d}, {len(self)} files, uid={self.series_instance_uid})"


@dataclass
class Study:
    """A study of one patient and its series."""

    study_instance_uid: str | None
    description: str | None
    date: str | None
    series: list[Series] = field(default_factory=list)


@dataclass
class Patient:
    """A patient (PatientID, else PatientName) and their studies."""

    patient_id: str | None
    patient_name: str | None
    studies: list[Study] = field(default_factory=list)

    @property
    def series(self) -> list[Series]:
        return [s for st in self.studies for s in st.series]


def _patient_key(s: Series) -> tuple[str, str]:
    return (s.patient_id or "", "" if s.patient_id else (s.patient_name or ""))


class Index:
    """What :func:`scan` found: the files, grouped into patients, studies and series.

    Attributes
    ----------
    root : list of Path
        What was scanned.
    series : list of Series
        In patient, study, modality, description order.
    patients : list of Patient
    skipped : list of (Path, str)
        Files that are not DICOM (or DICOM with nothing to index, such as a
        DICOMDIR), with the reason.
    unreadable : list of (Path, str)
        Files that look like DICOM but could not be parsed, with the error.
    """

    def __init__(
        self,
        roots: Sequence[Path],
        instances: Iterable[Instance],
        skipped: list[tuple[Path, str]],
        unreadable: list[tuple[Path, str]],
    ) -> None:
        self.root = list(roots)
        self.skipped = skipped
        self.unreadable = unreadable
        groups: dict[tuple[str | None, str], Series] = {}
        for inst in instances:
            uid = inst.series_instance_uid
            if uid is None:
                # No series UID (non-conformant): one pseudo-series per file.
                key: tuple[str | None, str] = (f"?{inst.path}", inst.modality)
            else:
                key = (uid, inst.modality)
            if key not in groups:
                groups[key] = Series(uid, inst.modality)
            groups[key].instances.append(inst)
        for s in groups.values():
            s.instances.sort(key=lambda i: (i.instance_number if i.instance_number is not None else 0, str(i.path)))
        self.series: list[Series] = sorted(
            groups.values(),
            key=lambda s: (_patient_key(s), s.study_instance_uid or "", s.modality, s.description or "", s.series_instance_uid or ""),
        )
        self.patients: list[Patient] = self._group_patients()

    def _group_patients(self) -> list[Patient]:
        by_patient: dict[tuple[str, str], dict[str | None, list[Series]]] = defaultdict(lambda: defaultdict(list))
        for s in self.series:
            by_patient[_patient_key(s)][s.study_instance_uid].append(s)
        patients = []
        for _key, studies in by_patient.items():
            first = next(iter(studies.values()))[0]
            p = Patient(first.patient_id, first.patient_name)
            for uid, series in studies.items():
                inst = series[0].instances[0]
                desc = next((i.study_description for s in series for i in s.instances if i.study_description), None)
                p.studies.append(Study(uid, desc, inst.study_date, series))
            patients.append(p)
        return patients

    @property
    def instances(self) -> list[Instance]:
        return [i for s in self.series for i in s.instances]

    def cases(self) -> list[Case]:
        """Every case found: one per planning CT (or per patient without a CT).

        See :func:`rtkit.load` for the linking rules.
        """
        from .case import build_cases

        return build_cases(self)

    def summary(self) -> str:
        """A text tree: patients / studies / series, with links and skipped files."""
        from .case import describe_index

        return describe_index(self)

    def __repr__(self) -> str:
        return (
            f"Index({len(self.patients)} patients, {len(self.series)} series, "
            f"{sum(len(s) for s in self.series)} files, {len(self.skipped)} skipped, "
            f"{len(self.unreadable)} unreadable)"
        )


def _walk(paths: Sequence[Path]) -> Iterator[Path]:
    for root in paths:
        if root.is_file():
            yield root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            for name in sorted(filenames):
                yield base / name


def _progress(iterable: Iterable[Path], total: int, enabled: bool) -> Iterable[Path]:
    if not enabled:
        return iterable
    try:
        tqdm = require("tqdm", "progress", "A progress bar").tqdm
    except RTKitError as exc:
        warn(f"{exc}; scanning without one", log)
        return iterable
    return tqdm(iterable, total=total, unit="file", desc="scanning", leave=False)


@guard_decoding
def scan(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, progress: bool = False
) -> Index:
    """Index every DICOM file under ``path`` by reading headers only.

    Folders are walked recursively.  File names and extensions are ignored:
    each file is sniffed (the ``DICM`` preamble, or a plausible first data
    element for files written without file meta) and parsed up to, not
    including, the pixel data.  Files that are not DICOM are skipped and
    counted; files that look like DICOM but cannot be parsed are counted as
    unreadable, with a warning.

    Parameters
    ----------
    path : path-like or sequence of path-like
        A folder, a file, or a list of them.
    progress : bool
        Show a progress bar (needs the ``progress`` extra, tqdm).

    Returns
    -------
    Index

    Raises
    ------
    DicomReadError
        If ``path`` does not exist.
    """
    roots = [Path(p) for p in ([path] if isinstance(path, (str, os.PathLike)) else path)]
    for r in roots:
        if not r.exists():
            raise DicomReadError(f"{r}: no such file or folder")
    files = list(_walk(roots))
    instances: list[Instance] = []
    skipped: list[tuple[Path, str]] = []
    unreadable: list[tuple[Path, str]] = []
    for f in _progress(files, len(files), progress):
        try:
            ds = open_dataset(f, headers_only=True)
        except NotDicomError:
            skipped.append((f, "not DICOM"))
            continue
        except DicomReadError as exc:
            unreadable.append((f, str(exc)))
            continue
        if sop_class_uid(ds) == DICOMDIR_SOP:
            skipped.append((f, "DICOMDIR"))
            continue
        try:
            instances.append(make_instance(ds, f))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            unreadable.append((f, f"{f}: header cannot be interpreted ({type(exc).__name__}: {exc})"))
    if unreadable:
        names = ", ".join(str(p) for p, _ in unreadable[:5])
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        warn(f"{len(unreadable)} file(s) look like DICOM but cannot be read: {names}{more}", log)
    if skipped:
        log.info("skipped %d non-DICOM file(s) under %s", len(skipped), ", ".join(map(str, roots)))
    return Index(roots, instances, skipped, unreadable)
