"""The rtkit command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

import rtkit
from rtkit.cli import main


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "rtkit info" in out and "rtkit demo" in out
    for sub in ("info", "demo"):
        with pytest.raises(SystemExit):
            main([sub, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


def test_bad_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["info"])
    assert e.value.code == 2


def test_info_on_missing_path_fails_cleanly(capsys, tmp_path):
    assert main(["info", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "no such file" in err and "Traceback" not in err


def test_demo_prints_the_summary(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "Case RTKIT-DEMO-001" in out and "RTPLAN" in out and "HU -1000 to 700" in out
    assert len(list((tmp_path / "d").iterdir())) == 43
    # the DVH table: the PTV line carries the same figures as rtkit.dvh on the written case
    case = rtkit.load(tmp_path / "d")
    ptv = rtkit.dvh(case.dose, case.structures["PTV"])
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("PTV"))
    assert line.split()[1:3] == [f"{ptv.mean:.2f}", f"{ptv.dose_at(95):.2f}"]


def test_info_lists_every_series_of_the_real_data(data_dir, capsys):
    assert main(["info", str(data_dir)]) == 0
    out = capsys.readouterr().out
    files = [Path(d) / f for d, _, fs in os.walk(data_dir) for f in fs]
    dcm = [f for f in files if f.suffix == ".dcm"]
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True, force=True).SeriesInstanceUID) for f in dcm}
    for uid in uids:
        assert f"series …{uid[-10:]}" in out or f"series {uid} " in out, uid
    assert f"skipped {len(files) - len(dcm)} non-DICOM file(s)" in out
    for folder in ("nelms-analytical-dvh", "dicompyler-core", "mirp-sts-ct-pet-mr", "rt-utils-mock",
                   "opentps-phantom-ionplan", "misc-rt-objects"):
        assert (data_dir / folder).is_dir()


def test_console_script_runs():
    exe = Path(sys.executable).with_name("rtkit")
    if not exe.exists():
        pytest.skip("rtkit console script not installed in this environment")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "rtkit" in r.stdout


def test_masks_writes_nifti_per_roi(tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    import json

    import numpy as np

    from rtkit.datasets import PHANTOM

    case = tmp_path / "case"
    assert main(["demo", "--out", str(case)]) == 0
    out = tmp_path / "masks"
    assert main(["masks", str(case), "--out", str(out), "--label-map"]) == 0
    rois = json.loads((out / "rois.json").read_text())
    assert [r["name"] for r in rois.values()] == ["BODY", "Lung_L", "Lung_R", "Spine", "PTV"]
    ptv = nib.load(str(out / "PTV.nii.gz"))
    data = np.asarray(ptv.dataobj)
    ijk = np.argwhere(data > 0)
    ras = ijk @ ptv.affine[:3, :3].T + ptv.affine[:3, 3]
    lps = ras * np.array([-1, -1, 1])
    # Every PTV voxel centre lies within the sphere's slab solid: radius 20 mm, 1.5 mm end caps.
    r = np.linalg.norm(lps - np.asarray(PHANTOM["ptv"]["center"]), axis=1)
    assert len(ijk) > 100 and r.max() <= PHANTOM["ptv"]["radius"] + 1.5
    labels = np.asarray(nib.load(str(out / "labels.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    assert np.array_equal(labels == 5, data > 0)  # PTV is last: never overwritten
    # Existing files are not replaced without --overwrite.
    assert main(["masks", str(case), "--out", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["masks", str(case), "--out", str(out), "--overwrite", "--names", "ptv", "--fractional"]) == 0
    frac = np.asarray(nib.load(str(out / "PTV.nii.gz")).dataobj)
    assert frac.dtype == np.float32 and 0 < frac.max() <= 1


def test_info_prints_the_plan_summary(data_dir, capsys):
    path = data_dir / "dicompyler-core/rtplan.dcm"
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    ds = pydicom.dcmread(path)
    for beam in ds.BeamSequence:
        assert beam.BeamName in out
    assert "Rx 14 Gy in 7 fx" in out


def test_dvh_command(tmp_path, capsys):
    import csv

    case = tmp_path / "case"
    assert main(["demo", "--out", str(case)]) == 0
    capsys.readouterr()
    out_csv = tmp_path / "dvh.csv"
    assert main(["dvh", str(case), "--metrics", "D95%,Dmean,V20Gy[%]", "--structures", "PTV",
                 "--out", str(out_csv)]) == 0
    printed = capsys.readouterr().out
    assert "PTV" in printed and "D95%" in printed
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["structure"] for r in rows] == ["PTV"]
    assert float(rows[0]["V20Gy[%]"]) == pytest.approx(100.0)  # the PTV lies inside the 45 Gy isodose
    assert float(rows[0]["D95%"]) < float(rows[0]["Dmean"])
    # --between-planes slab: the volume is the slab solid's (Structure.volume)
    assert main(["dvh", str(case), "--metrics", "Dmean", "--structures", "PTV", "--between-planes", "slab",
                 "--out", str(tmp_path / "slab.csv")]) == 0
    slab = list(csv.DictReader((tmp_path / "slab.csv").open()))
    expected = rtkit.dvh(rtkit.load(case).dose, rtkit.load(case).structures["PTV"], between_planes="slab").mean
    assert float(slab[0]["Dmean"]) == pytest.approx(expected, rel=1e-6)
    # --workers: the table is the same on one process as on all cores (the default)
    capsys.readouterr()
    assert main(["dvh", str(case), "--metrics", "Dmean,D95%,Dmax", "--out", str(tmp_path / "all.csv")]) == 0
    assert main(["dvh", str(case), "--metrics", "Dmean,D95%,Dmax", "--workers", "1",
                 "--out", str(tmp_path / "one.csv")]) == 0
    assert (tmp_path / "all.csv").read_text() == (tmp_path / "one.csv").read_text()
    assert len(list(csv.DictReader((tmp_path / "one.csv").open()))) > 3
    assert main(["dvh", str(case), "--metrics", "D95"]) == 2
    assert "accepted forms" in capsys.readouterr().err


def test_register_command(tmp_series, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")

    def values(k, r, c):
        return (1000 + 400 * np.exp(-((r - 20.0) ** 2 + (c - 18.0) ** 2) / 60.0 - (k - 8.0) ** 2 / 20.0)
                + 200 * np.exp(-((r - 12.0) ** 2 + (c - 28.0) ** 2) / 20.0 - (k - 6.0) ** 2 / 8.0))

    kw = dict(shape=(16, 36, 40), pixel_spacing=(2.0, 2.0), slice_step=3.0, values=values)
    ct = tmp_series(subfolder="ct", frame_of_reference_uid="2.25.1001", **kw)
    mr = tmp_series(subfolder="mr", modality="MR", frame_of_reference_uid="2.25.1002", rescale=None, **kw)
    out, res = tmp_path / "reg.dcm", tmp_path / "mr_on_ct.nii.gz"
    code = main(["register", str(ct.folder), str(mr.folder), "--out", str(out), "--resampled", str(res)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "matrix (moving patient mm -> fixed patient mm)" in printed and "wrote" in printed
    reg = rtkit.read_registration(out)
    assert reg.moving.frame_of_reference_uid == "2.25.1002"
    # the same voxels in two frames with the same coordinates: the identity, to a fraction of a voxel
    pts = rtkit.read_image(ct.folder).grid.centers().reshape(-1, 3)[::50]
    assert np.abs(reg.transform_points(pts) - pts).max() < 0.3
    assert nib.load(res).shape == (40, 36, 16)
    assert main(["register", str(ct.folder), str(mr.folder), "--out", str(out)]) == 1  # exists: refused
    assert "exists" in capsys.readouterr().err


def test_gamma_command(tmp_path, capsys):
    case = tmp_path / "case"
    assert main(["demo", "--out", str(case)]) == 0
    capsys.readouterr()
    rd = next(p for p in case.iterdir() if p.name.startswith("RD"))
    assert main(["gamma", str(rd), str(rd), "--criteria", "3%/3mm"]) == 0
    out = capsys.readouterr().out
    assert "pass rate 100.00 %" in out and "mean 0.000" in out
    assert main(["gamma", str(rd), str(rd), "--criteria", "3/3"]) == 2
    assert "--criteria" in capsys.readouterr().err


def test_masks_does_not_replace_an_existing_rois_json(tmp_path, capsys):
    pytest.importorskip("nibabel")
    case = tmp_path / "case"
    assert main(["demo", "--out", str(case)]) == 0
    out = tmp_path / "masks"
    out.mkdir()
    (out / "rois.json").write_text("mine")
    # the NIfTI files are new; only the table exists: it must survive, and the command fail
    assert main(["masks", str(case), "--out", str(out), "--names", "PTV"]) == 1
    assert (out / "rois.json").read_text() == "mine"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["masks", str(case), "--out", str(out), "--names", "PTV", "--overwrite"]) == 0
    assert (out / "rois.json").read_text() != "mine"
