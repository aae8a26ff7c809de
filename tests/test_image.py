"""rtkit.Image: resampling, point sampling, NIfTI export."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtkit
from rtkit import FrameOfReferenceError, GeometryError, Grid, Image


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _linear_image(grid: Grid, coef=(0.5, -1.25, 2.0), const=7.0, modality="CT") -> Image:
    """An image whose value at every voxel centre is coef . xyz + const (computed by hand)."""
    k, r, c = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    a = grid.affine
    xyz = (a[:3, 0] * k[..., None] + a[:3, 1] * r[..., None] + a[:3, 2] * c[..., None] + a[:3, 3])
    return Image(xyz @ np.asarray(coef) + const, grid, modality)


SOURCE = Grid.from_spacing((12, 14, 16), (3.0, 1.5, 2.0), origin=(-16.0, -10.0, -17.0),
                           frame_of_reference_uid="1.2.3")


def test_array_shape_must_match_grid():
    with pytest.raises(GeometryError, match="does not match grid shape"):
        Image(np.zeros((2, 3, 4)), SOURCE)


def test_lazy_array_loads_once():
    calls = []

    def load():
        calls.append(1)
        return np.ones(SOURCE.shape)

    img = Image(load, SOURCE)
    assert not img.is_loaded and calls == []
    assert img.array.sum() == SOURCE.size
    _ = img.array
    assert calls == [1] and img.is_loaded


def test_resample_onto_same_grid_is_a_copy():
    img = _linear_image(SOURCE)
    out = img.resample(SOURCE)
    np.testing.assert_array_equal(out.array, img.array)
    assert out.array is not img.array


@settings(max_examples=25, deadline=None)
@given(angles=st.tuples(*(st.floats(-0.6, 0.6),) * 3),
       spacing=st.tuples(*(st.floats(0.7, 2.5),) * 3))
def test_trilinear_resampling_of_a_linear_field_is_exact(angles, spacing):
    """Trilinear interpolation reproduces a linear function exactly, on any oblique grid."""
    coef, const = np.array([0.5, -1.25, 2.0]), 7.0
    img = _linear_image(SOURCE, coef, const)
    centre = SOURCE.index_to_world((np.asarray(SOURCE.shape) - 1) / 2)
    d = _rotation(*angles)
    shape = (5, 6, 7)
    origin = centre - d @ (np.asarray(spacing) * (np.asarray(shape) - 1) / 2)
    target = Grid.from_spacing(shape, spacing, origin, d, "1.2.3")
    out = img.resample(target)
    k, r, c = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    xyz = origin + (np.stack([k, r, c], -1) * np.asarray(spacing)) @ d.T
    np.testing.assert_allclose(out.array, xyz @ coef + const, atol=1e-9)


def test_points_outside_get_the_fill_and_ct_default_is_air():
    img = _linear_image(SOURCE)
    far = Grid.from_spacing((2, 2, 2), (1, 1, 1), origin=(500.0, 500.0, 500.0))
    assert np.all(img.resample(far).array == -1000.0)
    assert np.all(img.resample(far, fill=3.5).array == 3.5)
    pet = Image(img.array, SOURCE, "PT")
    assert np.all(pet.resample(far).array == 0.0)


def test_rim_half_voxel_is_inside_and_clamped():
    """Within half a voxel beyond the outer centres the edge value is used; beyond, fill."""
    img = _linear_image(SOURCE)
    last = SOURCE.index_to_world((0, 0, SOURCE.shape[2] - 1))
    col_step = SOURCE.affine[:3, 2]
    inside = img.sample([last + 0.49 * col_step])
    outside = img.sample([last + 0.51 * col_step])
    assert inside[0] == pytest.approx(img.array[0, 0, -1])
    assert np.isnan(outside[0])


def test_resample_with_a_translation_transform():
    """transform maps moving (this image) to fixed coordinates: out(q) = f(q - t)."""
    coef, const = np.array([0.5, -1.25, 2.0]), 7.0
    img = _linear_image(SOURCE, coef, const)
    t = np.array([4.0, -3.0, 6.0])
    m = np.eye(4)
    m[:3, 3] = t
    target = Grid.from_spacing((4, 4, 4), (2.0, 2.0, 2.0), origin=(-2.0, -2.0, -2.0))
    out = img.resample(target, transform=m)
    k, r, c = np.meshgrid(*(np.arange(4),) * 3, indexing="ij")
    q = np.array([-2.0, -2.0, -2.0]) + 2.0 * np.stack([c, r, k], -1)  # from_spacing default maps (k,r,c)->(z,y,x)
    np.testing.assert_allclose(out.array, (q - t) @ coef + const, atol=1e-9)


def test_resample_accepts_an_object_with_matrix():
    class Reg:
        matrix = np.eye(4)

    img = _linear_image(SOURCE)
    np.testing.assert_allclose(img.resample(SOURCE, transform=Reg()).array, img.array)


def test_resample_across_frames_needs_a_transform():
    img = _linear_image(SOURCE)
    other = Grid(SOURCE.shape, SOURCE.affine, "9.9.9")
    with pytest.raises(FrameOfReferenceError, match="frame of reference"):
        img.resample(other)
    img.resample(other, transform=np.eye(4))  # explicit registration: allowed


def test_nearest_neighbour_keeps_dtype():
    arr = np.arange(np.prod(SOURCE.shape), dtype=np.int16).reshape(SOURCE.shape)
    img = Image(arr, SOURCE, "CT")
    out = img.resample(SOURCE.__class__(SOURCE.shape, SOURCE.affine @ np.diag([1, 1, 1, 1.0])), order=0)
    assert out.array.dtype == np.int16
    np.testing.assert_array_equal(out.array, arr)


def test_sample_linear_field_and_outside_nan():
    coef, const = np.array([0.5, -1.25, 2.0]), 7.0
    img = _linear_image(SOURCE, coef, const)
    rng = np.random.default_rng(0)
    lo, hi = SOURCE.origin, SOURCE.index_to_world(np.asarray(SOURCE.shape) - 1)
    pts = lo + rng.random((50, 3)) * (hi - lo)
    np.testing.assert_allclose(img.sample(pts), pts @ coef + const, atol=1e-9)
    assert img.sample(pts.reshape(5, 10, 3)).shape == (5, 10)
    assert np.isnan(img.sample([[1e4, 0, 0]])[0])


def test_cubic_spline_interpolates_the_samples():
    """An interpolating spline passes through the voxel values at the voxel centres."""
    rng = np.random.default_rng(3)
    img = Image(rng.normal(size=SOURCE.shape), SOURCE)
    idx = np.array([[3, 4, 5], [0, 0, 0], [11, 13, 15], [6, 2, 9]])
    vals = img.sample(SOURCE.index_to_world(idx.astype(float)), order=3)
    np.testing.assert_allclose(vals, img.array[tuple(idx.T)], atol=1e-9)


def test_to_nifti_round_trip_keeps_world_positions(tmp_path):
    nib = pytest.importorskip("nibabel")
    d = _rotation(0.3, -0.2, 0.1)
    grid = Grid.from_spacing((5, 6, 7), (2.5, 0.8, 1.2), origin=(10.0, -20.0, 30.0), direction=d)
    arr = np.arange(grid.size, dtype=np.float32).reshape(grid.shape)
    path = rtkit.Image(arr, grid, "CT").to_nifti(tmp_path / "ct.nii.gz")
    nii = nib.load(str(path))
    data = np.asarray(nii.dataobj)
    assert data.shape == (7, 6, 5)  # (column, row, slice)
    rng = np.random.default_rng(1)
    for _ in range(20):
        k, r, c = (int(rng.integers(n)) for n in grid.shape)
        ras = nii.affine @ np.array([c, r, k, 1.0])
        lps = grid.origin + d @ (np.array([k, r, c]) * np.array([2.5, 0.8, 1.2]))
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-5)
        assert data[c, r, k] == arr[k, r, c]
    assert int(nii.header["sform_code"]) == 1


def test_to_nifti_refuses_to_overwrite(tmp_path):
    pytest.importorskip("nibabel")
    img = Image(np.zeros(SOURCE.shape, np.float32), SOURCE)
    p = img.to_nifti(tmp_path / "a.nii")
    before = p.read_bytes()
    with pytest.raises(rtkit.RTKitError, match="overwrite=True"):
        Image(np.ones(SOURCE.shape, np.float32), SOURCE).to_nifti(p)
    assert p.read_bytes() == before
    Image(np.ones(SOURCE.shape, np.float32), SOURCE).to_nifti(p, overwrite=True)
    assert p.read_bytes() != before
    assert [f.name for f in tmp_path.iterdir()] == ["a.nii"]  # no temporary left behind
