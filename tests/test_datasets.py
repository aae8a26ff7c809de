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
