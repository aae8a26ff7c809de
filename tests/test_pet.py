"""PET SUV: synthetic PET series with known activity, dose, weight and times, and real data.

Expected SUVs are computed here from the values written (activity from the
stored pixels and rescale, dose, weight, half-life and the times given as
plain numbers of seconds), with ``exp(-ln 2 t / T)``; nothing is copied from
rtkit output.  Synthetic series are written with :mod:`builders` and the PET
attributes added with pydicom by :func:`write_pet` below.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from builders import SeriesTruth, file_hashes, write_image_series
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

import rtkit
from rtkit.io.series import series_image
from rtkit.pet import SUVError, body_surface_area, lean_body_mass

F18_HALF_LIFE = 6586.2  # s (109.77 min)
ZR89_HALF_LIFE = 282276.0  # s (78.41 h)
READERS = ["read_image", "scan+load"]

# The attributes that live in the RadiopharmaceuticalInformationSequence item.
_DRUG_KEYWORDS = {
    "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime",
    "RadionuclideTotalDose", "RadionuclideHalfLife", "Radiopharmaceutical",
}


# --------------------------------------------------------------------------- helpers
class Malformed(str):
    """A value written as it is (VR LO), e.g. a number pydicom would refuse as DS."""


def write_pet(
    folder: Path,
    *,
    attrs: dict[str, Any] | None = None,
    drop: Sequence[str] = (),
    per_file: dict[str, Sequence[Any]] | None = None,
    shape: tuple[int, int, int] = (4, 6, 7),
    seed: int = 0,
) -> SeriesTruth:
    """A synthetic PET (Units BQML) series with the SUV attributes set.

    Defaults: 70 kg, 1.75 m, M, 370 MBq of 18F injected at 10:15:00 on
    2024-01-02, series and acquisition at 11:30:00 the same day, decay
    correction START.  ``attrs`` overrides or adds attributes (keywords;
    those of the radiopharmaceutical item go into the sequence), ``drop``
    removes them, ``per_file`` sets a different value in each file (in the
    order the files were written).  Activities are 0..~30 kBq/mL with a
    different rescale slope per slice, as scanners write them.
    """
    values: dict[str, Any] = {
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["ATTN", "DECY", "SCAT"],
        "PatientWeight": "70",
        "PatientSize": "1.75",
        "PatientSex": "M",
        "SeriesDate": "20240102",
        "SeriesTime": "113000",
        "AcquisitionDate": "20240102",
        "AcquisitionTime": "113000",
        "Radiopharmaceutical": "Fluorodeoxyglucose",
        "RadiopharmaceuticalStartTime": "101500.00",
        "RadionuclideTotalDose": "3.7E8",
        "RadionuclideHalfLife": str(F18_HALF_LIFE),
    }
    values.update(attrs or {})
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 32000, size=shape)
    truth = write_image_series(
        folder, modality="PT", shape=shape, values=stored, slice_step=3.27,
        per_slice_rescale=lambda k: (0.75 + 0.125 * k, 0.0), rng=seed,
    )
    for j, path in enumerate(truth.paths):
        ds = pydicom.dcmread(path)
        item = Dataset()
        these = dict(values)
        for kw, seq in (per_file or {}).items():
            these[kw] = seq[j]
        for kw, v in these.items():
            if kw in drop:
                continue
            target = item if kw in _DRUG_KEYWORDS else ds
            if isinstance(v, Malformed):  # bypass pydicom's value conversion
                target.add_new(kw, "LO", str(v))
            else:
                setattr(target, kw, v)
        for kw in drop:
            if kw in ds:
                delattr(ds, kw)
        if "RadiopharmaceuticalInformationSequence" not in drop:
            ds.RadiopharmaceuticalInformationSequence = DicomSequence([item])
        ds.save_as(path, enforce_file_format=True)
    return truth


def activity(truth: SeriesTruth) -> np.ndarray:
    """Bq/mL of every voxel in geometric (grid) order, from what was written."""
    return np.stack([s.values for s in truth.by_k()])


def read(reader: str, folder: Path) -> rtkit.Image:
    if reader == "read_image":
        return rtkit.read_image(folder)
    case = rtkit.load(folder)
    assert case.ct is None and len(case.images) == 1
    return case.images[0]


def decay(seconds: float, half_life: float) -> float:
    return math.exp(-math.log(2.0) * seconds / half_life)


def check_suv(out: rtkit.Image, truth: SeriesTruth, factor: float, rtol: float = 1e-6) -> None:
    """``out`` (an SUV image) is the written activity times ``factor``, voxel by voxel."""
    np.testing.assert_allclose(out.array, activity(truth) * factor, rtol=rtol, atol=0)


# --------------------------------------------------------------------------- SUVbw
@pytest.mark.parametrize("reader", READERS)
def test_suv_bw_exact(tmp_path: Path, reader: str) -> None:
    truth = write_pet(tmp_path / "pet")
    hashes = file_hashes(tmp_path / "pet")
    img = read(reader, tmp_path / "pet")
    before = img.array.copy()
    meta_before = {k: v for k, v in img.meta.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", rtkit.RTKitWarning)
        out = rtkit.suv(img)
    elapsed = (11 * 3600 + 30 * 60) - (10 * 3600 + 15 * 60)  # 75 min
    expected = activity(truth) * 70_000.0 / (3.7e8 * decay(elapsed, F18_HALF_LIFE))
    np.testing.assert_allclose(out.array, expected, rtol=1e-3)
    np.testing.assert_allclose(out.array, expected, rtol=1e-6)  # float32 rounding only
    assert out.array.dtype == np.float32
    assert out.grid.isclose(img.grid, atol=0) and out.modality == "PT"
    assert out.series_instance_uid == img.series_instance_uid
    assert out.meta["units"] == "SUVbw"
    assert out.meta["suv"]["kind"] == "bw"
    assert out.meta["suv"]["elapsed_s"] == pytest.approx(elapsed)
    assert out.meta["suv"]["factor"] == pytest.approx(70_000.0 / (3.7e8 * decay(elapsed, F18_HALF_LIFE)))
    # the input is untouched: pixels, metadata, files
    np.testing.assert_array_equal(img.array, before)
    assert img.meta == meta_before and img.meta["units"] == "BQML"
    assert file_hashes(tmp_path / "pet") == hashes
    assert "suv" in rtkit.__all__ and rtkit.suv is rtkit.pet.suv


def test_suv_headers_only_scan(tmp_path: Path) -> None:
    """A series built from scan()'s header records (lazy pixels) carries the PET values too."""
    truth = write_pet(tmp_path / "pet")
    series = [s for s in rtkit.scan(tmp_path / "pet").series if s.is_image][0]
    img = series_image(series.instances)
    assert not img.is_loaded
    out = rtkit.suv(img)
    check_suv(out, truth, 70_000.0 / (3.7e8 * decay(75 * 60, F18_HALF_LIFE)))


def test_midnight_without_date(tmp_path: Path) -> None:
    """Injection 23:30 on the 2nd, scan 00:15 on the 3rd, only the start time in the header."""
    truth = write_pet(tmp_path / "pet", attrs={
        "SeriesDate": "20240103", "SeriesTime": "001500", "AcquisitionDate": "20240103",
        "AcquisitionTime": "001500", "RadiopharmaceuticalStartTime": "233000"})
    img = rtkit.read_image(tmp_path / "pet")
    with pytest.warns(rtkit.RTKitWarning, match="previous day"):
        out = rtkit.suv(img)
    elapsed = 45 * 60
    np.testing.assert_allclose(out.array, activity(truth) * 70_000.0 / (3.7e8 * decay(elapsed, F18_HALF_LIFE)), rtol=1e-6)
    assert out.meta["suv"]["injection_time"] == "2024-01-02T23:30:00"


def test_midnight_with_start_datetime(tmp_path: Path) -> None:
    truth = write_pet(tmp_path / "pet", attrs={
        "SeriesDate": "20240103", "SeriesTime": "001500", "AcquisitionDate": "20240103",
        "AcquisitionTime": "001500", "RadiopharmaceuticalStartTime": "233000",
        "RadiopharmaceuticalStartDateTime": "20240102233000"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", rtkit.RTKitWarning)
        out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    np.testing.assert_allclose(out.array, activity(truth) * 70_000.0 / (3.7e8 * decay(2700, F18_HALF_LIFE)), rtol=1e-6)


def test_across_days_start_datetime(tmp_path: Path) -> None:
    """89Zr imaged 2 days, 1 h 45 min after injection: only StartDateTime gives the days."""
    truth = write_pet(tmp_path / "pet", attrs={
        "SeriesDate": "20240104", "SeriesTime": "001500", "AcquisitionDate": "20240104",
        "AcquisitionTime": "001500", "RadiopharmaceuticalStartTime": "223000",
        "RadiopharmaceuticalStartDateTime": "20240101223000.000000",
        "RadionuclideHalfLife": str(ZR89_HALF_LIFE), "RadionuclideTotalDose": "7.4E7"})
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    elapsed = 2 * 86400 + 1 * 3600 + 45 * 60
    assert out.meta["suv"]["elapsed_s"] == pytest.approx(elapsed)
    np.testing.assert_allclose(out.array, activity(truth) * 70_000.0 / (7.4e7 * decay(elapsed, ZR89_HALF_LIFE)), rtol=1e-6)


def test_start_datetime_utc_offset_is_local_time(tmp_path: Path) -> None:
    truth = write_pet(tmp_path / "pet", attrs={"RadiopharmaceuticalStartDateTime": "20240102101500+0100"})
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    np.testing.assert_allclose(out.array, activity(truth) * 70_000.0 / (3.7e8 * decay(4500, F18_HALF_LIFE)), rtol=1e-6)


def test_injection_after_scan_is_an_error(tmp_path: Path) -> None:
    write_pet(tmp_path / "pet", attrs={"RadiopharmaceuticalStartDateTime": "20240102120000"})
    with pytest.raises(SUVError, match="RadiopharmaceuticalStartDateTime") as exc:
        rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    assert "after the reference time" in str(exc.value)


def test_admin_decay_correction(tmp_path: Path) -> None:
    """ADMIN: already decay-corrected to the injection; times and half-life are not needed."""
    truth = write_pet(tmp_path / "pet", attrs={"DecayCorrection": "ADMIN"},
                      drop=("SeriesTime", "RadiopharmaceuticalStartTime", "RadionuclideHalfLife"))
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    check_suv(out, truth, 70_000.0 / 3.7e8, rtol=1e-6)
    assert out.meta["suv"]["decay_correction"] == "ADMIN"
    assert out.meta["suv"]["decayed_dose_bq"] == 3.7e8


def test_series_time_after_acquisition_uses_acquisition(tmp_path: Path) -> None:
    """A series time reset by post-processing: the earliest acquisition is the scan start."""
    truth = write_pet(tmp_path / "pet", attrs={"SeriesTime": "140000"},
                      per_file={"AcquisitionTime": ["113000", "113400", "113000", "113800"]})
    with pytest.warns(rtkit.RTKitWarning, match="SeriesTime.*later than the earliest AcquisitionTime"):
        out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    check_suv(out, truth, 70_000.0 / (3.7e8 * decay(4500, F18_HALF_LIFE)), rtol=1e-6)


def test_later_acquisitions_keep_series_time(tmp_path: Path) -> None:
    """Multi-bed: acquisitions after the series start; START means the series start."""
    truth = write_pet(tmp_path / "pet",
                      per_file={"AcquisitionTime": ["113000", "113400", "113800", "114200"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", rtkit.RTKitWarning)
        out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    check_suv(out, truth, 70_000.0 / (3.7e8 * decay(4500, F18_HALF_LIFE)), rtol=1e-6)


def test_overrides(tmp_path: Path) -> None:
    truth = write_pet(tmp_path / "pet", drop=("PatientWeight", "RadionuclideTotalDose"))
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"), weight_kg=82.5, injected_dose_bq=2.5e8)
    check_suv(out, truth, 82_500.0 / (2.5e8 * decay(4500, F18_HALF_LIFE)), rtol=1e-6)
    with pytest.raises(ValueError, match="weight_kg"):
        rtkit.suv(rtkit.read_image(tmp_path / "pet"), weight_kg=0, injected_dose_bq=2.5e8)


# --------------------------------------------------------------------------- errors
MISSING = [
    ("PatientWeight", "PatientWeight"),
    ("RadionuclideTotalDose", "RadionuclideTotalDose"),
    ("RadionuclideHalfLife", "RadionuclideHalfLife"),
    ("SeriesTime", "SeriesTime"),
    ("Units", "Units"),
    ("DecayCorrection", "DecayCorrection"),
    ("RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartTime"),
    ("RadiopharmaceuticalInformationSequence", "RadiopharmaceuticalInformationSequence"),
]


@pytest.mark.parametrize(("dropped", "named"), MISSING)
def test_missing_attribute_is_named(tmp_path: Path, dropped: str, named: str) -> None:
    write_pet(tmp_path / "pet", drop=(dropped,))
    img = rtkit.read_image(tmp_path / "pet")
    with pytest.raises(SUVError) as exc:
        rtkit.suv(img)
    assert named in str(exc.value)
    assert exc.value.attribute == named
    assert "missing" in str(exc.value)
    assert str(img.series_instance_uid) in str(exc.value)
    assert isinstance(exc.value, rtkit.RTKitError)
    assert isinstance(exc.value, rtkit.DicomReadError)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(("attr", "value"), [("PatientWeight", "0"), ("PatientWeight", Malformed("abc")),
                                             ("RadionuclideTotalDose", "-5"),
                                             ("SeriesTime", Malformed("2561")), ("RadionuclideHalfLife", "0")])
def test_invalid_attribute_is_named(tmp_path: Path, attr: str, value: str) -> None:
    write_pet(tmp_path / "pet", attrs={attr: value})
    with pytest.raises(SUVError, match=attr) as exc:
        rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    assert exc.value.attribute == attr


@pytest.mark.parametrize(("units", "match"), [("CNTS", "Philips"), ("GML", "already SUVbw"),
                                              ("PROPCNTS", "PROPCNTS")])
def test_wrong_units(tmp_path: Path, units: str, match: str) -> None:
    write_pet(tmp_path / "pet", attrs={"Units": units})
    with pytest.raises(SUVError, match=match) as exc:
        rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    assert exc.value.attribute == "Units"
    assert "Units" in str(exc.value) and units in str(exc.value)


def test_decay_correction_none_refused(tmp_path: Path) -> None:
    write_pet(tmp_path / "pet", attrs={"DecayCorrection": "NONE"})
    with pytest.raises(SUVError, match="DecayCorrection is NONE") as exc:
        rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    assert exc.value.attribute == "DecayCorrection"


def test_values_differing_between_files(tmp_path: Path) -> None:
    write_pet(tmp_path / "pet", per_file={"PatientWeight": ["70", "70", "71", "70"]})
    with pytest.raises(SUVError, match="PatientWeight differs") as exc:
        rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    assert exc.value.attribute == "PatientWeight"


def test_not_attenuation_corrected_warns(tmp_path: Path) -> None:
    write_pet(tmp_path / "pet", attrs={"CorrectedImage": ["DECY"]})
    with pytest.warns(rtkit.RTKitWarning, match="lacks ATTN"):
        rtkit.suv(rtkit.read_image(tmp_path / "pet"))


def test_not_a_pet_image(tmp_path: Path) -> None:
    write_image_series(tmp_path / "ct", modality="CT")
    ct = rtkit.read_image(tmp_path / "ct")
    with pytest.raises(SUVError, match="not PT"):
        rtkit.suv(ct)
    write_pet(tmp_path / "pet")
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"))
    with pytest.raises(SUVError, match="already in SUVbw"):
        rtkit.suv(out)
    bare = rtkit.Image(np.zeros(out.shape), out.grid, "PT", meta={"units": "BQML"})
    with pytest.raises(SUVError, match=r"meta\['pet'\]"):
        rtkit.suv(bare)
    with pytest.raises(ValueError, match="kind"):
        rtkit.suv(out, kind="ibw")


# --------------------------------------------------------------------------- LBM and BSA
def james(w: float, h_cm: float, sex: str) -> float:
    return 1.10 * w - 128 * (w / h_cm) ** 2 if sex == "M" else 1.07 * w - 148 * (w / h_cm) ** 2


def janmahasatian(w: float, h_m: float, sex: str) -> float:
    bmi = w / (h_m * h_m)
    return 9270 * w / (6680 + 216 * bmi) if sex == "M" else 9270 * w / (8780 + 244 * bmi)


def test_lbm_formulas_hand_values() -> None:
    # 70 kg, 175 cm: BMI 22.857; worked by hand
    assert lean_body_mass(70, 1.75, "M", "james") == pytest.approx(77.0 - 128 * 0.16, rel=1e-12)  # 56.52
    assert lean_body_mass(70, 1.75, "F", "james") == pytest.approx(74.9 - 148 * 0.16, rel=1e-12)  # 51.22
    assert lean_body_mass(70, 1.75, "M") == pytest.approx(648900 / (6680 + 216 * 70 / 3.0625), rel=1e-12)
    assert lean_body_mass(70, 1.75, "M") == pytest.approx(55.857, abs=1e-3)
    assert lean_body_mass(70, 1.75, "F") == pytest.approx(45.197, abs=1e-3)
    assert body_surface_area(70, 1.75) == pytest.approx(0.007184 * 70**0.425 * 175**0.725)
    assert body_surface_area(70, 1.75) == pytest.approx(1.848, abs=1e-3)


@settings(max_examples=200, deadline=None)
@given(bmi=st.floats(15, 60), h=st.floats(1.2, 2.2), sex=st.sampled_from(["M", "F"]))
def test_lbm_janmahasatian_property(bmi: float, h: float, sex: str) -> None:
    w = bmi * h * h
    lbm = lean_body_mass(w, h, sex)
    assert lbm == pytest.approx(janmahasatian(w, h, sex), rel=1e-12)
    assert 0 < lbm < w
    assert lean_body_mass(w, h, "M") > lean_body_mass(w, h, "F")


@pytest.mark.parametrize(("formula", "sex"), [("janmahasatian", "M"), ("janmahasatian", "F"),
                                              ("james", "M"), ("james", "F")])
def test_suv_lbm(tmp_path: Path, formula: str, sex: str) -> None:
    truth = write_pet(tmp_path / "pet", attrs={"PatientSex": sex, "PatientWeight": "82", "PatientSize": "1.68"})
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"), kind="lbm", lbm_formula=formula)
    lbm = james(82, 168, sex) if formula == "james" else janmahasatian(82, 1.68, sex)
    check_suv(out, truth, lbm * 1000 / (3.7e8 * decay(4500, F18_HALF_LIFE)), rtol=1e-6)
    assert out.meta["units"] == "SUVlbm"
    assert out.meta["suv"]["lbm_kg"] == pytest.approx(lbm)
    assert out.meta["suv"]["lbm_formula"] == formula


def test_suv_bsa(tmp_path: Path) -> None:
    truth = write_pet(tmp_path / "pet")
    out = rtkit.suv(rtkit.read_image(tmp_path / "pet"), kind="bsa")
    bsa_cm2 = 0.007184 * 70**0.425 * 175**0.725 * 1e4
    check_suv(out, truth, bsa_cm2 / (3.7e8 * decay(4500, F18_HALF_LIFE)), rtol=1e-6)
    assert out.meta["units"] == "SUVbsa"


@pytest.mark.parametrize(("attrs", "drop", "named", "match"), [
    ({}, ("PatientSex",), "PatientSex", "missing"),
    ({"PatientSex": "O"}, (), "PatientSex", "'O'"),
    ({}, ("PatientSize",), "PatientSize", "missing"),
    ({"PatientSize": "175"}, (), "PatientSize", "cm instead of m"),
])
def test_lbm_missing_sex_or_height(tmp_path: Path, attrs: dict, drop: tuple, named: str, match: str) -> None:
    write_pet(tmp_path / "pet", attrs=attrs, drop=drop)
    img = rtkit.read_image(tmp_path / "pet")
    with pytest.raises(SUVError, match=match) as exc:
        rtkit.suv(img, kind="lbm")
    assert exc.value.attribute == named and named in str(exc.value)
    # SUVbw does not need them
    rtkit.suv(img)
    if named == "PatientSex":
        assert rtkit.suv(img, kind="lbm", sex="F").meta["suv"]["sex"] == "F"


# --------------------------------------------------------------------------- time invariants
_GRID = rtkit.Grid((1, 2, 2), np.eye(4))


def _image(pet: dict) -> rtkit.Image:
    base = {"units": "BQML", "decay_correction": "START", "patient_weight": "70",
            "series_date": "20240102", "series_time": "113000", "acquisitions": [],
            "corrected_image": ["ATTN", "DECY"], "conflicts": {}, "radiopharmaceutical_items": 1}
    base.update(pet)
    return rtkit.Image(np.full((1, 2, 2), 1000.0), _GRID, "PT", meta={"units": "BQML", "pet": base})


def _tm(dt: datetime) -> str:
    return dt.strftime("%H%M%S.%f")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inj=st.datetimes(datetime(1999, 12, 25), datetime(2030, 1, 1)),
       elapsed=st.integers(1, 5 * 86400), half_life=st.floats(60.0, 1e6),
       with_datetime=st.booleans())
def test_elapsed_time_invariant(inj: datetime, elapsed: int, half_life: float, with_datetime: bool) -> None:
    """Any injection instant and delay: the decay uses the true delay when the injection date is
    known (StartDateTime), the delay modulo one day when only the start time is."""
    from datetime import timedelta

    assume((elapsed if with_datetime else elapsed % 86400) < 40 * half_life)
    inj = inj.replace(microsecond=(inj.microsecond // 10) * 10)
    scan = inj + timedelta(seconds=elapsed)
    drug = {"total_dose": "3.7E8", "half_life": repr(half_life), "start_time": _tm(inj),
            "start_datetime": inj.strftime("%Y%m%d%H%M%S.%f") if with_datetime else None}
    img = _image({"series_date": scan.strftime("%Y%m%d"), "series_time": _tm(scan),
                  "radiopharmaceutical": drug})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        out = rtkit.suv(img)
    expected_elapsed = elapsed if with_datetime else elapsed % 86400
    assert out.meta["suv"]["elapsed_s"] == pytest.approx(expected_elapsed, abs=1e-5)
    if expected_elapsed > 0:
        assert out.meta["suv"]["factor"] == pytest.approx(
            70_000.0 / (3.7e8 * decay(expected_elapsed, half_life)), rel=1e-9)


@pytest.mark.parametrize(("text", "seconds"), [("101500", 0), ("1015", 0), ("10", 900),
                                               ("10:15:00", 0), ("101500.5", -0.5)])
def test_time_formats(text: str, seconds: float) -> None:
    img = _image({"series_time": "113000", "radiopharmaceutical": {
        "total_dose": "3.7E8", "half_life": "6586.2", "start_time": text}})
    out = rtkit.suv(img)
    assert out.meta["suv"]["elapsed_s"] == pytest.approx(4500 + seconds)


# --------------------------------------------------------------------------- real data
def test_mirp_raw_pet_suvmax(data_dir: Path) -> None:
    """The raw STS_001 FDG PET (GE, BQML, START, 267 slices, non-uniform pitch) converted by
    rtkit agrees with the MIRP authors' SUV PET (cropped, Units GML) inside the GTV."""
    root = data_dir / "mirp-sts-ct-pet-mr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)  # non-uniform pitch
        raw = rtkit.read_image(root / "raw/STS_001/FDG_PET/image")
    ref = rtkit.read_image(root / "cropped/STS_001/PET/dicom/image")
    assert raw.shape == (267, 128, 128) and ref.meta["units"] == "GML"
    with warnings.catch_warnings():
        warnings.simplefilter("error", rtkit.RTKitWarning)
        out = rtkit.suv(raw)
    # Header: 71 kg, 388.78 MBq 18F at 10:35:00, series 11:20:11 (45 min 11 s later).
    expected_factor = 71_000.0 / (3.88777472e8 * decay(45 * 60 + 11, 6588.0))
    assert out.meta["suv"]["factor"] == pytest.approx(expected_factor, rel=1e-9)
    (rs_raw,) = sorted((root / "raw/STS_001/FDG_PET/mask").iterdir())
    (rs_ref,) = sorted((root / "cropped/STS_001/PET/dicom/mask").iterdir())
    gtv_raw = rtkit.read_structures(rs_raw)["GTV_Mass"].mask(out.grid)
    gtv_ref = rtkit.read_structures(rs_ref)["GTV_Mass_PET"].mask(ref.grid)
    assert gtv_raw.sum() > 100 and gtv_ref.sum() > 100
    suvmax, refmax = float(out.array[gtv_raw].max()), float(ref.array[gtv_ref].max())
    assert suvmax == pytest.approx(refmax, rel=0.01)
    # voxel by voxel over the cropped region (same frame of reference, grids nearly coincide)
    on_ref = out.resample(ref.grid)
    assert float(np.mean(on_ref.array[gtv_ref])) == pytest.approx(float(np.mean(ref.array[gtv_ref])), rel=0.01)
