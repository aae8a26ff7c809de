"""rtkit.datasets: the built-in synthetic case."""

from __future__ import annotations

import numpy as np
import pytest
from _dciodvfy import assert_valid

import rtkit
from rtkit.datasets import PHANTOM, analytical_dose


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return rtkit.datasets.synthetic_case(tmp_path_factory.mktemp("demo"))


def test_files_and_determinism(demo, tmp_path):
    names = sorted(p.name for p in demo.iterdir())
    assert names == [f"CT{i:03d}.dcm" for i in range(1, 41)] + ["RD.dcm", "RP.dcm", "RS.dcm"]
    again = rtkit.datasets.synthetic_case(tmp_path / "again")
    for n in names:
        assert (demo / n).read_bytes() == (again / n).read_bytes(), n


@pytest.mark.parametrize(("name", "iod"), [("CT001.dcm", "CTImage"), ("RS.dcm", "RTStructureSet"),
                                           ("RP.dcm", "RTPlan")])
def test_objects_pass_dciodvfy(demo, name, iod):
    # RD.dcm is not checked: dciodvfy 20260927 aborts on 32-bit pixel data (an assertion in its
    # OW encoding rules), whatever the content.
    assert_valid(demo / name, iod)


def test_structures_match_the_phantom_definition(demo):
    ss = rtkit.load(demo).structures
    ptv = ss["PTV"]
    r, spacing = PHANTOM["ptv"]["radius"], PHANTOM["slice_spacing"]
    # Slab volume of the 72-gon cross-sections at each CT plane, computed here.
    z = PHANTOM["origin"][2] + spacing * np.arange(PHANTOM["shape"][0])
    radii2 = r * r - z**2
    radii2 = radii2[radii2 > 1.0]
    ngon = 0.5 * 72 * np.sin(2 * np.pi / 72)  # area of a unit-circumradius 72-gon
    # (vertices are stored with 4 decimals: 1e-5 relative)
    assert ptv.volume == pytest.approx(np.sum(ngon * radii2) * spacing / 1000, rel=1e-5)
    assert ptv.type == "PTV" and ss["BODY"].type == "EXTERNAL"


def test_dose_grid_samples_the_analytical_dose(demo):
    import pydicom

    ds = pydicom.dcmread(demo / "RD.dcm")
    arr = ds.pixel_array * float(ds.DoseGridScaling)
    ipp = np.asarray(ds.ImagePositionPatient, float)
    ps = [float(v) for v in ds.PixelSpacing]
    k, r, c = 10, 17, 21
    xyz = ipp + np.array([c * ps[1], r * ps[0], float(ds.GridFrameOffsetVector[k])])
    assert arr[k, r, c] == pytest.approx(float(analytical_dose(xyz)), abs=float(ds.DoseGridScaling))
    assert arr.max() == pytest.approx(PHANTOM["prescription_gy"] * 1.03, rel=0.01)


# ------------------------------------------------------------------ rtkit demo: report and review figure
def test_demo_report_table_and_review_png(tmp_path):
    import warnings

    import matplotlib.image as mpimg

    from rtkit._demo import DEMO_METRICS, default_png_path, run_demo
    from rtkit.cli import main

    assert main(["demo", "--out", str(tmp_path / "case")]) == 0
    png = default_png_path(tmp_path / "case")
    assert png == tmp_path / "case-review.png" and png.is_file()
    assert len(list((tmp_path / "case").iterdir())) == 43  # the figure is beside the case, not in it
    img = mpimg.imread(png)[..., :3]
    h, w = img.shape[:2]
    assert w > 2 * h > 600 and float(img.std()) > 0.05
    # each ROI's colour is drawn: in the slice panels (contours) and in the DVH panel (curves), except
    # a curve drawn over by a later ROI's identical one (the demo's two lungs are mirror images)
    case = rtkit.load(tmp_path / "case")
    report = run_demo(tmp_path / "case", png=False)
    values = [tuple(round(r[m], 6) for m in DEMO_METRICS) for r in report.table]
    hidden = {r["structure"] for i, r in enumerate(report.table) if values[i] in values[i + 1:]}
    assert hidden == {"Lung_L"}
    pix = (img * 255).round().astype(int)
    for name in case.structures.names:
        colour = np.array(case.structures[name].color)
        hit = np.all(np.abs(pix - colour) <= 2, axis=-1)
        assert hit[:, : 2 * w // 3].sum() > 20, f"{name} contour missing"
        if name not in hidden:
            assert hit[:, 2 * w // 3:].sum() > 20, f"{name} DVH curve missing"

    assert report.png is None and not report.notes
    rx = case.plan.prescription_gy
    names = [n for n in case.structures.names if not case.structures[n].is_empty]
    assert [r["structure"] for r in report.table] == names
    for row in report.table:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rtkit.RTKitWarning)  # ROIs partly outside the dose grid
            d = rtkit.dvh(case.dose, case.structures[row["structure"]], prescription_gy=rx)
        for m in DEMO_METRICS:
            assert row[m] == pytest.approx(d[m], rel=1e-12, abs=1e-12), (row["structure"], m)
    table_lines = report.lines[report.lines.index(next(ln for ln in report.lines if ln.startswith("DVH"))) + 2:]
    assert len(table_lines) == len(names)


def test_demo_png_options_and_missing_matplotlib(tmp_path, capsys, monkeypatch):
    import sys

    from rtkit.cli import main

    assert main(["demo", "--out", str(tmp_path / "a"), "--png", str(tmp_path / "fig.png")]) == 0
    assert (tmp_path / "fig.png").stat().st_size > 10_000
    assert f"written to {tmp_path / 'fig.png'}" in capsys.readouterr().out
    assert main(["demo", "--out", str(tmp_path / "b"), "--no-png"]) == 0
    assert not (tmp_path / "b-review.png").exists() and "review figure" not in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    assert main(["demo", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "review figure skipped" in out and "rtkit[plot]" in out and "PTV" in out
    assert not (tmp_path / "c-review.png").exists()
