"""Every script in examples/ runs (in a subprocess, as a user would run it) and writes real output.

The outputs are checked against rtkit computed here, independently of the
script: DVH metrics against ``rtkit.dvh``, masks against ``Structure.mask``,
the REG file against the printed transform.  Examples on the real data use
the ``data_dir`` fixture (skipped without the data, a failure on CI).
"""

from __future__ import annotations

import csv
import json
import operator
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import rtkit

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str, data: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    if data is not None:
        env["RTKIT_TEST_DATA"] = str(data)
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          env=env, timeout=300)
    if check:
        assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_real_png(path: Path, min_size: int = 200) -> np.ndarray:
    """The PNG exists, is a decent size and is not blank (many colours, real contrast)."""
    import matplotlib.image as mpimg

    assert path.is_file(), path
    img = mpimg.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_size, img.shape
    rgb = img[..., :3]
    assert float(rgb.std()) > 0.05, f"{path.name} looks blank"
    colours = np.unique((rgb.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50, f"{path.name} has only {len(colours)} colours"
    return rgb


def quiet_dvh(dose, structure, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        return rtkit.dvh(dose, structure, **kw)


# ------------------------------------------------------------------ (a) plan QA
def test_plan_qa(tmp_path: Path) -> None:
    proc = run("plan_qa.py", str(tmp_path))
    protocol = json.loads((EXAMPLES / "protocol.json").read_text())
    rows = read_csv(tmp_path / "plan_qa.csv")
    assert len(rows) == len(protocol["constraints"])
    case = rtkit.load(tmp_path / "case")
    ops = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
    printed = [ln.split() for ln in proc.stdout.splitlines() if ln.strip().startswith(("PASS", "FAIL"))]
    assert len(printed) == len(rows)
    for c, row, line in zip(protocol["constraints"], rows, printed, strict=True):
        d = quiet_dvh(case.dose, case.structures[c["structure"]], prescription_gy=protocol["prescription_gy"])
        expected = float(d[c["metric"]])
        assert float(row["value"]) == pytest.approx(expected, rel=1e-9, abs=1e-9), c
        verdict = "PASS" if ops[c["op"]](expected, c["limit"]) else "FAIL"
        assert row["result"] == verdict and line[0] == verdict, (c, row, line)
        assert line[1] == c["structure"] and line[2] == c["metric"]
        assert float(line[3]) == pytest.approx(expected, abs=0.005 + 1e-9)
    met = sum(r["result"] == "PASS" for r in rows)
    assert f"result: {met} of {len(rows)} constraints met" in proc.stdout
    assert_real_png(tmp_path / "plan_qa.png")


def test_plan_qa_exit_code_and_bad_protocol(tmp_path: Path) -> None:
    case = rtkit.datasets.synthetic_case(tmp_path / "case")
    ptv = quiet_dvh(rtkit.load(case).dose, rtkit.load(case).structures["PTV"])
    proto = {"prescription_gy": 60, "constraints": [
        {"structure": "PTV", "metric": "Dmax", "op": "<=", "limit": round(ptv.max - 1.0, 3)},  # fails
        {"structure": "ptv", "metric": "Dmin", "op": ">=", "limit": 0.0},  # passes; name case-insensitive
    ]}
    (tmp_path / "p.json").write_text(json.dumps(proto))
    proc = run("plan_qa.py", str(tmp_path / "out"), "--case", str(case), "--protocol", str(tmp_path / "p.json"),
               "--exit-code", check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [r["result"] for r in read_csv(tmp_path / "out" / "plan_qa.csv")] == ["FAIL", "PASS"]
    proto["constraints"][0]["metric"] = "D95"  # no unit: not a TG-263 metric
    (tmp_path / "p.json").write_text(json.dumps(proto))
    proc = run("plan_qa.py", str(tmp_path / "out2"), "--case", str(case), "--protocol", str(tmp_path / "p.json"),
               check=False)
    assert proc.returncode != 0 and "MetricError" in proc.stderr and "accepted forms" in proc.stderr


# ------------------------------------------------------------------ (b) cohort DVH
def check_cohort_rows(rows: list[dict[str, str]], folders: dict[str, Path], metrics: list[str]) -> None:
    """Every (case, ROI, metric) row equals rtkit.dvh on that case, and no row is missing."""
    seen = set()
    for pid, folder in folders.items():
        case = rtkit.load(folder)
        rx = case.plan.prescription_gy if case.plan is not None else None
        names = [n for n in case.structures.names if not case.structures[n].is_empty]
        mine = [r for r in rows if r["patient_id"] == pid]
        assert len(mine) == len(names) * len(metrics), (pid, len(mine))
        for name in names:
            d = quiet_dvh(case.dose, case.structures[name], prescription_gy=rx)
            for m in metrics:
                row = [r for r in mine if r["roi"] == name and r["metric"] == m]
                assert len(row) == 1, (pid, name, m)
                assert float(row[0]["value"]) == pytest.approx(float(d[m]), rel=1e-9, abs=1e-9), (pid, name, m)
                seen.add((pid, name, m))
    assert len(seen) == len(rows)


def test_cohort_dvh_default_cohort(tmp_path: Path, data_dir: Path) -> None:
    proc = run("cohort_dvh.py", str(tmp_path), "--metrics", "Dmean,D95%,V5Gy[%]", data=data_dir)
    rows = read_csv(tmp_path / "cohort_dvh.csv")
    assert set(rows[0]) >= {"case", "patient_id", "structure", "roi", "metric", "value", "unit"}
    units = {r["metric"]: r["unit"] for r in rows}
    assert units == {"Dmean": "Gy", "D95%": "Gy", "V5Gy[%]": "% vol"}
    check_cohort_rows(rows, {"123456": data_dir / "dicompyler-core", "RTKIT-DEMO-001": tmp_path / "synthetic_case"},
                      ["Dmean", "D95%", "V5Gy[%]"])
    assert read_csv(tmp_path / "cohort_failures.csv") == []
    assert f"{len(rows)} rows, 0 failed" in proc.stdout
    assert_real_png(tmp_path / "cohort_dvh.png")


def test_cohort_dvh_records_a_broken_case_and_goes_on(tmp_path: Path) -> None:
    good = rtkit.datasets.synthetic_case(tmp_path / "good")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "RD.dcm").write_bytes(b"not DICOM at all")
    run("cohort_dvh.py", str(tmp_path / "out"), str(broken), str(good), "--metrics", "Dmax,D2%")
    failures = read_csv(tmp_path / "out" / "cohort_failures.csv")
    assert [Path(f["case"]).name for f in failures] == ["broken"] and failures[0]["error"]
    rows = read_csv(tmp_path / "out" / "cohort_dvh.csv")
    check_cohort_rows(rows, {"RTKIT-DEMO-001": good}, ["Dmax", "D2%"])
    # the plain-loop fallback (rtkit.cohort not importable) gives the same figures and failures
    code = ("import runpy, sys, rtkit; rtkit.__dict__.pop('cohort', None); sys.modules['rtkit.cohort'] = None; "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(EXAMPLES / "cohort_dvh.py"), str(tmp_path / "loop"),
                           str(broken), str(good), "--metrics", "Dmax,D2%"], capture_output=True, text=True,
                          env=dict(os.environ, MPLBACKEND="Agg"), timeout=300)
    assert proc.returncode == 0 and "via loop" in proc.stdout, proc.stdout + proc.stderr
    loop = read_csv(tmp_path / "loop" / "cohort_dvh.csv")
    check_cohort_rows(loop, {"RTKIT-DEMO-001": good}, ["Dmax", "D2%"])
    key = {(r["patient_id"], r["roi"], r["metric"]): float(r["value"]) for r in rows}
    assert {(r["patient_id"], r["roi"], r["metric"]): float(r["value"]) for r in loop} == key
    assert [f["case"] for f in read_csv(tmp_path / "loop" / "cohort_failures.csv")] == ["broken"]


# ------------------------------------------------------------------ (c) PET/MR review
def test_pet_mr_review(tmp_path: Path, data_dir: Path) -> None:
    run("pet_mr_review.py", str(tmp_path), data=data_dir)
    q = {r["quantity"]: float(r["value"]) for r in read_csv(tmp_path / "pet_mr_review.csv")}
    reg = rtkit.read_registration(tmp_path / "mr_to_ct_reg.dcm")
    assert reg.is_rigid
    assert q["registration rotation"] == pytest.approx(reg.rotation_deg, abs=1e-6)
    np.testing.assert_allclose([q[f"registration translation {a}"] for a in "xyz"], reg.translation_mm, atol=1e-6)
    mirp = data_dir / "mirp-sts-ct-pet-mr"
    ct_gtv = rtkit.read_structures(mirp / "cropped" / "STS_001" / "CT" / "dicom" / "mask" / "RS.dcm")
    gtv = next(ct_gtv[n] for n in ct_gtv.names if n.upper().startswith("GTV"))
    assert q["GTV volume (CT)"] == pytest.approx(gtv.volume, rel=1e-9)
    # the registration carries the MR GTV next to the CT GTV (they are drawn by different people on
    # different scans, and the MR starts 765 mm away in its own frame), not on top of it
    assert q["GTV centroid distance CT - MR on CT"] < 30.0
    assert q["SUVmax in GTV"] > q["SUVmean in GTV"] > 0.5
    rgb = assert_real_png(tmp_path / "pet_mr_review.png", min_size=600)
    # the PET colourwash ("hot": red with little blue) is present in the top-left panel
    h, w = rgb.shape[:2]
    top_left = rgb[: h // 2, : w // 2]
    hot = (top_left[..., 0] > 0.6) & (top_left[..., 2] < 0.3)
    assert hot.mean() > 0.01


# ------------------------------------------------------------------ (d) masks to NIfTI
def test_masks_to_nifti(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")  # in the test extra: never skipped there
    run("masks_to_nifti.py", str(tmp_path))
    case = rtkit.load(tmp_path / "case")
    ct_nii = nib.load(tmp_path / "ct.nii.gz")
    assert ct_nii.shape == case.ct.grid.shape[::-1]
    np.testing.assert_array_equal(np.asarray(ct_nii.dataobj), np.transpose(case.ct.array, (2, 1, 0)))
    rows = read_csv(tmp_path / "labels.csv")
    names = [n for n in case.structures.names if not case.structures[n].is_empty]
    assert [r["name"] for r in rows] == names
    labels = np.asarray(nib.load(tmp_path / "labels.nii.gz").dataobj)
    assert labels.shape == ct_nii.shape
    for r in rows:
        img = nib.load(tmp_path / "masks" / f"{r['name']}.nii.gz")
        assert img.shape == ct_nii.shape
        np.testing.assert_allclose(img.affine, ct_nii.affine)
        data = np.asarray(img.dataobj)
        assert set(np.unique(data)) <= {0, 1}
        expected = np.transpose(case.structures[r["name"]].mask(case.ct.grid), (2, 1, 0))
        np.testing.assert_array_equal(data.astype(bool), expected)
        assert int(r["voxels"]) == int(expected.sum()) > 0
        # later labels win where ROIs overlap: label i is exactly the mask minus later masks
        later = np.zeros_like(expected)
        for r2 in rows[int(r["label"]):]:
            later |= np.asarray(nib.load(tmp_path / "masks" / f"{r2['name']}.nii.gz").dataobj).astype(bool)
        np.testing.assert_array_equal(labels == int(r["label"]), expected & ~later)
    assert_real_png(tmp_path / "masks_preview.png")
