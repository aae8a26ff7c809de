"""PET standardised uptake values (SUV) from the DICOM PET header.

``SUV = C / (D_ref / N)`` where ``C`` is the activity concentration of a voxel
(Bq/mL, Units BQML), ``D_ref`` the injected activity (Bq) decayed to the
time the image is decay-corrected to, and ``N`` the normaliser: body weight
(g) for SUVbw, lean body mass (g) for SUVlbm (SUL), body surface area (cm²)
for SUVbsa.  See ``docs/pet.md`` for the conventions chosen (reference time,
midnight, formulas and their references).
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np

from .errors import DicomReadError, warn
from .image import Image

__all__ = ["suv", "lean_body_mass", "body_surface_area", "SUVError", "KINDS", "LBM_FORMULAS"]

log = logging.getLogger("rtkit.pet")

#: SUV kinds: body weight, lean body mass (SUL), body surface area.
KINDS = ("bw", "lbm", "bsa")
#: Lean-body-mass formulas for ``kind="lbm"``.
LBM_FORMULAS = ("janmahasatian", "james")

_UNITS = {"bw": "SUVbw", "lbm": "SUVlbm", "bsa": "SUVbsa"}
_DAY = timedelta(days=1)
# An acquisition earlier than the reference by less than this is "the same time" (DICOM TM
# values are often rounded to the second or to 10 ms).
_TIME_TOL_S = 1e-3


class SUVError(DicomReadError):
    """The PET header does not allow an SUV: an attribute is missing, invalid or unsupported.

    Attributes
    ----------
    attribute : str or None
        The DICOM keyword concerned (e.g. ``"PatientWeight"``), or the
        ``suv()`` argument that can supply it.
    """

    def __init__(self, message: str, attribute: str | None = None) -> None:
        super().__init__(message)
        self.attribute = attribute


# --------------------------------------------------------------------- DICOM date/time text
_TM = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$")
_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DT = re.compile(r"^(\d{8})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


def _parse_tm(text: str) -> time | None:
    """DICOM TM (``HH[MM[SS[.F{1,6}]]]``; ``HH:MM:SS`` of ACR-NEMA too) as a time, or None."""
    s = text.strip().replace(":", "")
    m = _TM.match(s)
    if not m:
        return None
    hh, mm, ss = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    frac = int((m[4] or "0").ljust(6, "0"))
    if hh > 23 or mm > 59 or ss > 60:
        return None
    ss = min(ss, 59)  # a leap second: close enough
    return time(hh, mm, ss, frac)


def _parse_da(text: str) -> date | None:
    """DICOM DA (``YYYYMMDD``; ``YYYY.MM.DD`` of ACR-NEMA too) as a date, or None."""
    m = _DA.match(text.strip().replace(".", "").replace("-", ""))
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def _parse_dt(text: str) -> datetime | None:
    """DICOM DT with at least a date and an hour, as a naive local datetime, or None.

    A UTC offset suffix (``&ZZXX``) is dropped: the other times in the header
    are local times without one.
    """
    m = _DT.match(text.strip())
    if not m or not m[2]:
        return None
    d, t = _parse_da(m[1]), _parse_tm(m[2])
    if d is None or t is None:
        return None
    return datetime.combine(d, t)


def _seconds(td: timedelta) -> float:
    return td.total_seconds()


# --------------------------------------------------------------------- body size formulas
def _sex(value: str | None, where: str) -> str:
    s = (value or "").strip().upper()
    if s in ("M", "MALE"):
        return "M"
    if s in ("F", "FEMALE"):
        return "F"
    if not s:
        raise SUVError(
            f"{where}: PatientSex is missing; the lean-body-mass formulas differ for men and "
            "women. Pass sex='M' or sex='F'.", "PatientSex")
    raise SUVError(
        f"{where}: PatientSex is {value!r}; the lean-body-mass formulas are defined only for "
        "'M' and 'F'. Pass sex='M' or sex='F'.", "PatientSex")


def lean_body_mass(
    weight_kg: float, height_m: float, sex: str, formula: str = "janmahasatian"
) -> float:
    """Lean body mass (kg) from weight, height and sex.

    Parameters
    ----------
    weight_kg : float
        Body weight, kg.
    height_m : float
        Height, m.
    sex : {"M", "F"}
    formula : {"janmahasatian", "james"}
        ``"janmahasatian"`` (Janmahasatian et al., Clin Pharmacokinet
        44:1051, 2005; BMI = W / H², W in kg, H in m)::

            men:   9270 W / (6680 + 216 BMI)
            women: 9270 W / (8780 + 244 BMI)

        ``"james"`` (James, Research on Obesity, HMSO 1976; H in cm)::

            men:   1.10 W - 128 (W / H)²
            women: 1.07 W - 148 (W / H)²

    Returns
    -------
    float
        Lean body mass, kg.

    Raises
    ------
    SUVError
        ``sex`` is not M/F, or the James formula gives a mass <= 0 (it
        decreases beyond a BMI of about 43 for men and 36 for women).
    ValueError
        Unknown ``formula`` or non-positive weight/height.
    """
    if not (weight_kg > 0 and height_m > 0):
        raise ValueError(f"weight ({weight_kg} kg) and height ({height_m} m) must be positive")
    s = _sex(sex, "lean_body_mass")
    f = formula.lower()
    if f == "janmahasatian":
        bmi = weight_kg / height_m**2
        if s == "M":
            return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    if f == "james":
        ratio = weight_kg / (100.0 * height_m)
        a, b = (1.10, 128.0) if s == "M" else (1.07, 148.0)
        lbm = a * weight_kg - b * ratio**2
        if lbm <= 0:
            raise SUVError(
                f"the James formula gives a lean body mass of {lbm:.1f} kg for {weight_kg} kg, "
                f"{height_m} m ({s}); it is not valid at this BMI. Use "
                "lbm_formula='janmahasatian'.", "lbm_formula")
        return lbm
    raise ValueError(f"lbm_formula must be one of {LBM_FORMULAS}, not {formula!r}")


def body_surface_area(weight_kg: float, height_m: float) -> float:
    """Body surface area (m²) by Du Bois & Du Bois (Arch Intern Med 17:863, 1916).

    ``BSA = 0.007184 W^0.425 H^0.725`` with W in kg and H in cm.

    Parameters
    ----------
    weight_kg : float
        Body weight, kg.
    height_m : float
        Height, m.

    Returns
    -------
    float
        m².
    """
    if not (weight_kg > 0 and height_m > 0):
        raise ValueError(f"weight ({weight_kg} kg) and height ({height_m} m) must be positive")
    return 0.007184 * weight_kg**0.425 * (100.0 * height_m) ** 0.725


# --------------------------------------------------------------------- header access
class _Header:
    """Typed access to ``Image.meta["pet"]`` with errors that name the attribute."""

    def __init__(self, pet: Mapping[str, Any], where: str) -> None:
        self.pet = pet
        self.where = where
        self.drug: Mapping[str, Any] = pet.get("radiopharmaceutical") or {}
        self.conflicts: Mapping[str, list[str]] = pet.get("conflicts") or {}

    def error(self, keyword: str, what: str, hint: str = "") -> SUVError:
        return SUVError(f"{self.where}: {keyword} {what}" + (f". {hint}." if hint else "."), keyword)

    def check_same(self, keyword: str) -> None:
        if keyword in self.conflicts:
            values = ", ".join(repr(v) for v in self.conflicts[keyword])
            raise self.error(
                keyword, f"differs between the files of the series ({values})",
                "The folder may mix several series or reconstructions; pass the files of one.")

    def text(self, key: str, keyword: str, *, drug: bool = False) -> str | None:
        self.check_same(keyword)
        v = (self.drug if drug else self.pet).get(key)
        return (str(v).strip() or None) if v is not None else None

    def positive(self, key: str, keyword: str, unit: str, hint: str, *, drug: bool = False) -> float:
        v = self.text(key, keyword, drug=drug)
        if v is None:
            raise self.error(keyword, "is missing", hint)
        try:
            x = float(v)
        except ValueError:
            raise self.error(keyword, f"is not a number ({v!r})", hint) from None
        if not (math.isfinite(x) and x > 0):
            raise self.error(keyword, f"is {v} {unit}; it must be positive", hint)
        return x


def _override(value: float | None, name: str, unit: str) -> float | None:
    if value is None:
        return None
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{name} must be a positive number of {unit}, got {value!r}")
    return x


def _where(pet: Image, hdr: Mapping[str, Any]) -> str:
    src = hdr.get("source")
    uid = pet.series_instance_uid or "(no SeriesInstanceUID)"
    return f"PET series {uid}" + (f" ({src}, ...)" if src else "")


# --------------------------------------------------------------------- times
def _acquisitions(hdr: _Header) -> list[tuple[datetime | None, time]]:
    """Acquisition (datetime or None when the file gives no date, time) of the files.

    From AcquisitionDateTime, else AcquisitionDate + AcquisitionTime.
    """
    out: list[tuple[datetime | None, time]] = []
    for row in hdr.pet.get("acquisitions") or ():
        adate, atime, adt = (list(row) + ["", "", ""])[:3]
        full = _parse_dt(adt) if adt else None
        if full is not None:
            out.append((full, full.time()))
            continue
        t = _parse_tm(atime) if atime else None
        if t is None:
            continue
        d = _parse_da(adate) if adate else None
        out.append((datetime.combine(d, t) if d else None, t))
    return out


def _reference_time(hdr: _Header) -> tuple[datetime, bool, str]:
    """The time the image is decay-corrected to (DecayCorrection START).

    Returns (reference, whether its date is known, description of its source).
    """
    st = hdr.text("series_time", "SeriesTime")
    if st is None:
        raise hdr.error(
            "SeriesTime", "is missing",
            "With DecayCorrection START the image is decay-corrected to the series start, "
            "so the injected dose cannot be decayed without it")
    t = _parse_tm(st)
    if t is None:
        raise hdr.error("SeriesTime", f"is not a valid DICOM time ({st!r})")
    acq = _acquisitions(hdr)
    d: date | None = None
    date_src = ""
    v = hdr.text("series_date", "SeriesDate")
    if v is not None:
        d = _parse_da(v)
        if d is None:
            raise hdr.error("SeriesDate", f"is not a valid DICOM date ({v!r})")
        date_src = "SeriesDate"
    else:  # the scan date from the acquisitions, else the study
        dated = [a for a, _ in acq if a is not None]
        if dated:
            d, date_src = min(dated).date(), "AcquisitionDate"
        elif (sd := _parse_da(hdr.pet.get("study_date") or "")) is not None:
            d, date_src = sd, "StudyDate"
    has_date = d is not None
    ref = datetime.combine(d or date(2000, 1, 1), t)
    source = f"SeriesTime {st}" + (f" on {date_src} {d.isoformat()}" if d else " (no date)")

    if acq:
        times = []
        for full, at in acq:
            if full is None or not has_date:
                # No date of its own: the occurrence of that time nearest the series time.
                full = datetime.combine(ref.date(), at)
                if _seconds(ref - full) > 43200:
                    full += _DAY
                elif _seconds(full - ref) > 43200:
                    full -= _DAY
            times.append(full)
        first = min(times)
        if _seconds(ref - first) > _TIME_TOL_S:
            warn(
                f"{hdr.where}: SeriesTime ({ref.isoformat(sep=' ')}) is later than the earliest "
                f"AcquisitionTime ({first.isoformat(sep=' ')}): the series time was probably "
                "reset when the series was processed or re-exported. Decay-correcting the dose "
                "to the earliest acquisition instead (the scan start).", log, stacklevel=4)
            ref = first
            source = f"earliest AcquisitionTime {first.time().isoformat()}" + (
                f" on {first.date().isoformat()}" if has_date else " (no date)")
    return ref, has_date, source


def _injection_time(hdr: _Header, ref: datetime, ref_has_date: bool) -> tuple[datetime, str]:
    """Injection (RadiopharmaceuticalStart) datetime, with the midnight rule."""
    sdt = hdr.text("start_datetime", "RadiopharmaceuticalStartDateTime", drug=True)
    full = _parse_dt(sdt) if sdt else None
    if sdt and full is None:
        warn(f"{hdr.where}: RadiopharmaceuticalStartDateTime {sdt!r} is not a usable DICOM "
             "date-time; using RadiopharmaceuticalStartTime instead.", log, stacklevel=4)
    if full is not None and ref_has_date:
        return full, f"RadiopharmaceuticalStartDateTime {sdt}"
    if full is not None:
        t, source = full.time(), f"time of RadiopharmaceuticalStartDateTime {sdt}"
    else:
        st = hdr.text("start_time", "RadiopharmaceuticalStartTime", drug=True)
        if st is None:
            raise hdr.error(
                "RadiopharmaceuticalStartTime",
                "is missing (and so is RadiopharmaceuticalStartDateTime)",
                "The injection time is needed to decay the injected dose to the scan start")
        parsed = _parse_tm(st)
        if parsed is None:
            raise hdr.error("RadiopharmaceuticalStartTime", f"is not a valid DICOM time ({st!r})")
        t, source = parsed, f"RadiopharmaceuticalStartTime {st}"
    inj = datetime.combine(ref.date(), t)
    if inj > ref:
        inj -= _DAY
        warn(
            f"{hdr.where}: the injection time {t.isoformat()} is later than the reference time "
            f"{ref.time().isoformat()} and no injection date is given "
            "(RadiopharmaceuticalStartDateTime); assuming the injection was on the previous day "
            f"({_seconds(ref - inj) / 3600:.2f} h before the scan).", log, stacklevel=4)
        source += " (previous day)"
    return inj, source


# --------------------------------------------------------------------- SUV
def suv(
    pet: Image,
    kind: str = "bw",
    *,
    lbm_formula: str = "janmahasatian",
    weight_kg: float | None = None,
    height_m: float | None = None,
    sex: str | None = None,
    injected_dose_bq: float | None = None,
) -> Image:
    """Standardised uptake value of a PET image.

    ``SUV = C * N / D_ref`` voxel by voxel, where ``C`` is the activity
    concentration (Bq/mL), ``D_ref`` the injected activity (Bq) decayed to
    the image's decay-correction reference time, and ``N`` the normaliser:

    - ``kind="bw"``: body weight, g (PatientWeight x 1000): SUVbw, g/mL;
    - ``kind="lbm"``: lean body mass, g (SUL), from PatientWeight,
      PatientSize (m) and PatientSex by ``lbm_formula``: SUVlbm, g/mL;
    - ``kind="bsa"``: body surface area, cm² (Du Bois): SUVbsa, cm²/mL.

    Decay correction (DecayCorrection):

    - ``START``: the image is decay-corrected to the series start, so
      ``D_ref = D * 2 ** (-(t_ref - t_inj) / T_half)`` (half-life in s).
      ``t_ref`` is SeriesDate + SeriesTime, unless SeriesTime is later than
      the earliest AcquisitionTime of the series (a series time reset by
      post-processing): then the earliest acquisition is used, with a warning.
      ``t_inj`` is RadiopharmaceuticalStartDateTime when present, else
      RadiopharmaceuticalStartTime on the reference date; a start time later
      than the reference time means the injection was the day before (with a
      warning).
    - ``ADMIN``: the image is decay-corrected to the injection:
      ``D_ref = D`` (no times or half-life needed).
    - ``NONE`` is refused (:class:`SUVError`): each slice would need its own
      decay and frame-duration correction.

    Parameters
    ----------
    pet : Image
        A PET image read by rtkit (``rtkit.read_image``, ``Case``), modality
        PT, whose ``meta["pet"]`` holds its header values; values in Bq/mL
        (Units BQML).
    kind : {"bw", "lbm", "bsa"}
    lbm_formula : {"janmahasatian", "james"}
        For ``kind="lbm"``; see :func:`lean_body_mass`.
    weight_kg : float, optional
        Patient weight, kg, instead of PatientWeight.
    height_m : float, optional
        Patient height, m, instead of PatientSize.
    sex : {"M", "F"}, optional
        Instead of PatientSex.
    injected_dose_bq : float, optional
        Injected activity at the injection time, Bq, instead of
        RadionuclideTotalDose.

    Returns
    -------
    Image
        A new image on the same grid: float32 SUV values, modality ``"PT"``;
        ``meta`` is a copy of ``pet.meta`` with ``units`` set to
        ``"SUVbw"``, ``"SUVlbm"`` or ``"SUVbsa"`` and ``meta["suv"]`` holding
        the factor applied (``factor``, (g or cm²)/Bq: SUV = value x factor),
        the dose (Bq), decayed dose (Bq), weight (kg), elapsed time (s),
        half-life (s), the reference and injection times and their sources.
        ``pet`` is not modified.

    Raises
    ------
    SUVError
        (a :class:`~rtkit.DicomReadError`, so also a ``ValueError``) a
        needed attribute is missing or invalid (the message and
        ``.attribute`` name it), Units is not BQML (CNTS with Philips
        private scale factors and GML are not supported), DecayCorrection is
        NONE or unknown, the injection is after the scan, or a value differs
        between the files of the series.
    ValueError
        Unknown ``kind``/``lbm_formula`` or a non-positive override.

    Warns
    -----
    RTKitWarning
        Series time later than the acquisition, injection assumed on the
        previous day, CorrectedImage without ATTN or DECY, several
        radiopharmaceuticals, an elapsed time above 10 half-lives.
    """
    if not isinstance(pet, Image):
        raise TypeError(f"pet must be an rtkit.Image, got {type(pet).__name__}")
    k = kind.lower()
    if k not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if lbm_formula.lower() not in LBM_FORMULAS:
        raise ValueError(f"lbm_formula must be one of {LBM_FORMULAS}, not {lbm_formula!r}")
    weight_o = _override(weight_kg, "weight_kg", "kg")
    height_o = _override(height_m, "height_m", "m")
    dose_o = _override(injected_dose_bq, "injected_dose_bq", "Bq")

    meta_units = str(pet.meta.get("units") or "")
    raw_hdr = pet.meta.get("pet")
    where = _where(pet, raw_hdr or {})
    if meta_units.upper().startswith("SUV"):
        raise SUVError(f"{where}: the image is already in {meta_units}; suv() takes the "
                       "activity-concentration image (Bq/mL).", "Units")
    if pet.modality != "PT":
        raise SUVError(f"{where}: modality is {pet.modality!r}, not PT; SUV needs a PET image.",
                       "Modality")
    if not isinstance(raw_hdr, Mapping):
        raise SUVError(
            f"{where}: the image carries no PET header values (meta['pet']); read it with "
            "rtkit.read_image or from a Case so that they are kept.", "meta['pet']")
    hdr = _Header(raw_hdr, where)

    # ---- units
    units = hdr.text("units", "Units")
    if units is None:
        raise hdr.error("Units", "is missing", "SUV needs activity concentrations in Bq/mL (BQML)")
    u = units.upper()
    if u == "CNTS":
        raise hdr.error("Units", "is CNTS (counts)",
                        "Converting counts with vendor-private (Philips) SUV scale factors is "
                        "not supported; export the series in Bq/mL (BQML)")
    if u == "GML":
        raise hdr.error("Units", "is GML: the values are already SUVbw (g/mL)",
                        "Use the image as it is")
    if u != "BQML":
        raise hdr.error("Units", f"is {units!r}", "SUV is supported only for BQML (Bq/mL)")

    # ---- decay correction
    dc = hdr.text("decay_correction", "DecayCorrection")
    if dc is None:
        raise hdr.error("DecayCorrection", "is missing",
                        "It says which time the image is decay-corrected to (START or ADMIN)")
    dcu = dc.upper()
    if dcu == "NONE":
        raise hdr.error(
            "DecayCorrection", "is NONE (no decay correction)",
            "rtkit does not decay-correct slice by slice; reconstruct the series with decay "
            "correction to the scan start (START)")
    if dcu not in ("START", "ADMIN"):
        raise hdr.error("DecayCorrection", f"is {dc!r}", "Only START and ADMIN are supported")
    corrected = [c.upper() for c in (raw_hdr.get("corrected_image") or [])]
    if corrected:
        missing = [c for c in ("ATTN", "DECY") if c not in corrected]
        if missing:
            warn(f"{where}: CorrectedImage ({', '.join(corrected)}) lacks {' and '.join(missing)}; "
                 "the SUV may be meaningless.", log)

    # ---- dose and body size
    if not hdr.drug:
        raise hdr.error("RadiopharmaceuticalInformationSequence", "is missing or empty",
                        "It holds the injected dose, injection time and half-life")
    if (raw_hdr.get("radiopharmaceutical_items") or 0) > 1:
        warn(f"{where}: RadiopharmaceuticalInformationSequence has "
             f"{raw_hdr['radiopharmaceutical_items']} items; using the first.", log)
    dose = dose_o if dose_o is not None else hdr.positive(
        "total_dose", "RadionuclideTotalDose", "Bq", "Pass injected_dose_bq= (Bq)", drug=True)
    weight = weight_o if weight_o is not None else hdr.positive(
        "patient_weight", "PatientWeight", "kg", "Pass weight_kg=")

    info: dict[str, Any] = {"kind": k, "decay_correction": dcu, "injected_dose_bq": dose,
                            "weight_kg": weight}
    if k in ("lbm", "bsa"):
        height = height_o if height_o is not None else hdr.positive(
            "patient_size", "PatientSize", "m", "Pass height_m=")
        if height > 3.0:
            raise hdr.error(
                "PatientSize", f"is {height:g} m, which is implausible (cm instead of m?)",
                f"Pass height_m= (e.g. height_m={height / 100:g})")
        info["height_m"] = height
        if k == "lbm":
            sx = _sex(sex if sex is not None else hdr.text("patient_sex", "PatientSex"), where)
            formula = lbm_formula.lower()
            lbm = lean_body_mass(weight, height, sx, formula)
            if formula == "james":
                peak_bmi = (1.10 / 256.0 if sx == "M" else 1.07 / 296.0) * 1e4
                if weight / height**2 > peak_bmi:
                    warn(f"{where}: BMI {weight / height**2:.1f} is beyond {peak_bmi:.0f}, where the "
                         "James formula starts to decrease with weight; consider "
                         "lbm_formula='janmahasatian'.", log)
            info.update(sex=sx, lbm_formula=formula, lbm_kg=lbm)
            normaliser = lbm * 1000.0  # g
        else:
            bsa = body_surface_area(weight, height)
            info["bsa_m2"] = bsa
            normaliser = bsa * 1e4  # cm²
    else:
        normaliser = weight * 1000.0  # g

    # ---- decay to the reference time
    half_life = None
    if dcu == "START":
        half_life = hdr.positive("half_life", "RadionuclideHalfLife", "s",
                                 "It is needed to decay the dose to the scan start", drug=True)
        ref, has_date, ref_source = _reference_time(hdr)
        inj, inj_source = _injection_time(hdr, ref, has_date)
        elapsed = _seconds(ref - inj)
        if elapsed < 0:
            raise hdr.error(
                "RadiopharmaceuticalStartDateTime",
                f"({inj.isoformat(sep=' ')}) is {-elapsed / 3600:.2f} h after the reference time "
                f"({ref_source})", "Check the injection and series dates")
        if elapsed > 10 * half_life:
            warn(f"{where}: the scan is {elapsed / 3600:.1f} h after the injection, more than 10 "
                 f"half-lives ({half_life:g} s); check the injection and series times.", log)
        decayed = dose * 2.0 ** (-elapsed / half_life)
        if not decayed > 0:
            raise hdr.error(
                "RadionuclideHalfLife",
                f"({half_life:g} s) is so short that the dose decays to nothing in the "
                f"{elapsed / 3600:.1f} h between injection and scan",
                "Check the half-life and the injection and series times")
        info.update(reference_time=ref.isoformat(), reference_source=ref_source,
                    injection_time=inj.isoformat(), injection_source=inj_source,
                    elapsed_s=elapsed)
    else:  # ADMIN: decay-corrected to the administration time
        hl = hdr.drug.get("half_life")
        try:
            half_life = float(hl) if hl is not None else None
        except ValueError:
            half_life = None
        decayed = dose
        info.update(reference_time=None, reference_source="injection (DecayCorrection ADMIN)",
                    injection_time=None, injection_source=None, elapsed_s=0.0)

    factor = normaliser / decayed
    info.update(half_life_s=half_life, decayed_dose_bq=decayed, factor=factor,
                factor_units="cm²/Bq" if k == "bsa" else "g/Bq",
                suv_units="cm²/mL" if k == "bsa" else "g/mL")
    values = (np.asarray(pet.array, dtype=np.float64) * factor).astype(np.float32)
    meta = dict(pet.meta)
    meta["pet"] = copy.deepcopy(raw_hdr)  # the result's meta never aliases the input's
    meta["units"] = _UNITS[k]
    meta["suv"] = info
    log.debug("%s: %s factor %.6g %s", where, _UNITS[k], factor, info["factor_units"])
    return Image(values, pet.grid, "PT", series_instance_uid=pet.series_instance_uid, meta=meta)
