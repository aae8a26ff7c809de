"""Test helpers that derive new cases from the built-in synthetic case.

``clone_case`` rewrites every UID consistently (so references between the
objects still hold) and can change the patient, drop objects, rename files
or strip the file meta, giving independent cases for linking tests.
"""

from __future__ import annotations

import functools
import random
import tempfile
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

import rtkit


def _remap(ds: Dataset, mapping: dict[str, str]) -> None:
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value and elem.tag.group != 0x0002:
            if elem.keyword in ("SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID"):
                continue
            vals = elem.value if elem.VM > 1 else [elem.value]
            new = [mapping.setdefault(str(v), generate_uid()) for v in vals]
            elem.value = new if elem.VM > 1 else new[0]


@functools.lru_cache(maxsize=1)
def _synthetic_source() -> Path:
    """The synthetic case, written once per test process outside any test folder."""
    return rtkit.datasets.synthetic_case(Path(tempfile.mkdtemp(prefix="rtkit-src-")))


def clone_case(
    dst: Path,
    *,
    patient_id: str = "CLONE",
    src: Path | None = None,
    keep=("CT", "RS", "RP", "RD"),
    random_names: bool = False,
    seed: int = 0,
    mapping: dict[str, str] | None = None,
    edit=None,
) -> Path:
    """Copy the synthetic case into ``dst`` with fresh UIDs (shared via ``mapping``)."""
    src = src or _synthetic_source()
    mapping = {} if mapping is None else mapping
    rng = random.Random(seed)
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if not any(f.name.startswith(k) for k in keep):
            continue
        ds = pydicom.dcmread(f)
        _remap(ds, mapping)
        ds.PatientID = patient_id
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if edit is not None:
            edit(f.name, ds)
        name = f"{rng.getrandbits(40):x}" if random_names else f.name
        ds.save_as(dst / name, enforce_file_format=True)
    return dst
