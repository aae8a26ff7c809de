"""rtkit.Grid: validation, hand-computed properties, and property-based round trips.

Expected values are computed by hand (worked examples written out below) or
with plain numpy matrix algebra on the affine, never with rtkit.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rtkit
from rtkit import GeometryError, Grid

# --------------------------------------------------------------------------- a worked example
# shape (2, 3, 4); slice axis +z 2.5 mm, row axis +y 0.8 mm, column axis +x 1.2 mm;
# voxel (0, 0, 0) at (-10, -20, 30).
SHAPE = (2, 3, 4)
AFFINE = np.array(
    [
        [0.0, 0.0, 1.2, -10.0],
        [0.0, 0.8, 0.0, -20.0],
        [2.5, 0.0, 0.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture
def grid() -> Grid:
    return Grid(SHAPE, AFFINE, "1.2.3.4")


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "shape",
    [(0, 2, 2), (2, -1, 2), (2, 2), (2, 2, 2, 2), (2.5, 2, 2), ("a", 2, 2), None, 5, (2, 2, 0)],
)
def test_bad_shape_raises_geometry_error(shape):
    with pytest.raises(GeometryError) as exc:
        Grid(shape, np.eye(4))
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, rtkit.RTKitError)


@pytest.mark.parametrize(
    "affine",
    [
        np.eye(3),
        np.eye(4)[:3],
        np.eye(5),
        np.zeros((4, 4, 1)),
        [[1, 0, 0, 0]],
    ],
)
def test_non_4x4_affine_raises(affine):
    with pytest.raises(GeometryError):
        Grid((2, 2, 2), affine)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (1, 2), (2, 3)])
def test_non_finite_affine_raises(bad, where):
    a = np.eye(4)
    a[where] = bad
    with pytest.raises(GeometryError) as exc:
        Grid((2, 2, 2), a)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("last_row", [(0, 0, 0, 2), (0, 0, 1, 1), (1e-3, 0, 0, 1), (0, 0, 0, 0)])
def test_bad_last_row_raises(last_row):
    a = np.eye(4)
    a[3] = last_row
    with pytest.raises(GeometryError):
        Grid((2, 2, 2), a)


@pytest.mark.parametrize(
    "linear",
    [
        np.zeros((3, 3)),
        np.diag([1.0, 1.0, 0.0]),  # zero-length column axis
        np.diag([0.0, 2.0, 3.0]),  # zero-length slice axis
        np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),  # parallel axes
        np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]),  # parallel, different lengths
        np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),  # coplanar axes
    ],
)
def test_singular_or_degenerate_affine_raises(linear):
    a = np.eye(4)
    a[:3, :3] = linear
    with pytest.raises(GeometryError) as exc:
        Grid((2, 2, 2), a)
    assert isinstance(exc.value, ValueError)


def test_geometry_error_hierarchy():
    assert issubclass(rtkit.GeometryError, rtkit.RTKitError)
    assert issubclass(rtkit.GeometryError, ValueError)
    assert issubclass(rtkit.FrameOfReferenceError, rtkit.GeometryError)


def test_affine_is_read_only_copy(grid):
    source = AFFINE.copy()
    g = Grid(SHAPE, source)
    source[0, 3] = 999.0  # mutating the input must not move the grid
    assert g.affine[0, 3] == -10.0
    with pytest.raises(ValueError):
        g.affine[0, 3] = 1.0
    o = g.origin
    o[0] = 123.0  # origin is a copy
    assert g.origin[0] == -10.0


# --------------------------------------------------------------------------- hand-computed properties
def test_properties_by_hand(grid):
    assert grid.shape == (2, 3, 4)
    assert grid.frame_of_reference_uid == "1.2.3.4"
    np.testing.assert_allclose(grid.spacing, [2.5, 0.8, 1.2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(grid.origin, [-10.0, -20.0, 30.0], rtol=0, atol=1e-12)
    # column i = unit LPS direction of index axis i: slice -> +z, row -> +y, column -> +x
    np.testing.assert_allclose(
        grid.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], rtol=0, atol=1e-12
    )
    # 2.5 * 0.8 * 1.2 mm3 = 2.4 mm3 = 0.0024 cm3
    assert grid.voxel_volume_cc == pytest.approx(0.0024, rel=1e-12)
    assert grid.size == 24


def test_index_to_world_by_hand(grid):
    # (1, 2, 3): x = -10 + 3 * 1.2 = -6.4; y = -20 + 2 * 0.8 = -18.4; z = 30 + 1 * 2.5 = 32.5
    np.testing.assert_allclose(grid.index_to_world((1, 2, 3)), [-6.4, -18.4, 32.5], atol=1e-12)
    np.testing.assert_allclose(grid.index_to_world((0, 0, 0)), [-10.0, -20.0, 30.0], atol=1e-12)
    # fractional index, and a batch of shape (2, 1, 3)
    pts = grid.index_to_world([[[0.5, 0.5, 0.5]], [[-1.0, 0.0, 2.0]]])
    assert pts.shape == (2, 1, 3)
    np.testing.assert_allclose(pts[0, 0], [-9.4, -19.6, 31.25], atol=1e-12)
    np.testing.assert_allclose(pts[1, 0], [-7.6, -20.0, 27.5], atol=1e-12)
    np.testing.assert_allclose(grid.world_to_index([-6.4, -18.4, 32.5]), [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose(grid.world_to_index([-9.4, -19.6, 31.25]), [0.5, 0.5, 0.5], atol=1e-12)


def test_centers_by_hand(grid):
    c = grid.centers()
    assert c.shape == (2, 3, 4, 3)
    xs = [-10.0, -8.8, -7.6, -6.4]
    ys = [-20.0, -19.2, -18.4]
    zs = [30.0, 32.5]
    for k, z in enumerate(zs):
        for r, y in enumerate(ys):
            for col, x in enumerate(xs):
                np.testing.assert_allclose(c[k, r, col], [x, y, z], atol=1e-12)


def test_corners_and_bounds_by_hand(grid):
    # the voxel box runs half a voxel beyond the outer centres:
    # x: -10 - 0.6 .. -6.4 + 0.6; y: -20 - 0.4 .. -18.4 + 0.4; z: 30 - 1.25 .. 32.5 + 1.25
    expected_bounds = [[-10.6, -20.4, 28.75], [-5.8, -18.0, 33.75]]
    np.testing.assert_allclose(grid.bounds, expected_bounds, atol=1e-12)
    corners = grid.corners()
    assert corners.shape == (8, 3)
    expected = {
        (x, y, z) for x in (-10.6, -5.8) for y in (-20.4, -18.0) for z in (28.75, 33.75)
    }
    got = {tuple(np.round(p, 9)) for p in corners}
    assert got == {tuple(np.round(p, 9)) for p in expected}


def test_bounds_with_flipped_axes():
    # feet-first-prone like: column -> -x, row -> -y, slice -> -z
    a = np.array(
        [
            [0.0, 0.0, -2.0, 10.0],
            [0.0, -1.0, 0.0, 5.0],
            [-3.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    g = Grid((2, 2, 3), a)
    # x centres 10, 8, 6 -> box 5 .. 11; y centres 5, 4 -> 3.5 .. 5.5; z centres 0, -3 -> -4.5 .. 1.5
    np.testing.assert_allclose(g.bounds, [[5.0, 3.5, -4.5], [11.0, 5.5, 1.5]], atol=1e-12)
    np.testing.assert_allclose(g.spacing, [3.0, 1.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(g.direction, [[0, 0, -1], [0, -1, 0], [-1, 0, 0]], atol=1e-12)
    assert g.voxel_volume_cc == pytest.approx(0.006, rel=1e-12)


def test_contains_by_hand(grid):
    inside = [[-10.0, -20.0, 30.0], [-6.4, -18.4, 32.5], [-10.59, -20.39, 28.76], [-5.81, -18.01, 33.74]]
    outside = [[-10.61, -20.0, 30.0], [-5.79, -19.0, 31.0], [-8.0, -20.41, 31.0], [-8.0, -19.0, 33.76],
               [-8.0, -19.0, 28.74], [0.0, 0.0, 0.0]]
    assert grid.contains(inside).tolist() == [True] * 4
    assert grid.contains(outside).tolist() == [False] * 6
    assert grid.contains(np.zeros((2, 5, 3))).shape == (2, 5)


def test_bad_point_arrays_raise(grid):
    with pytest.raises(GeometryError):
        grid.index_to_world([1.0, 2.0])
    with pytest.raises(GeometryError):
        grid.world_to_index(np.zeros((4, 2)))


def test_from_spacing_default_direction_matches_hand_affine(grid):
    g = Grid.from_spacing(SHAPE, spacing=(2.5, 0.8, 1.2), origin=(-10, -20, 30), frame_of_reference_uid="1.2.3.4")
    np.testing.assert_allclose(g.affine, AFFINE, atol=1e-12)
    assert g.shape == SHAPE
    assert g.frame_of_reference_uid == "1.2.3.4"


def test_from_dicom_hfs_matches_from_spacing():
    # HFS: row cosine +x (columns), column cosine +y (rows), normal +z
    d = Grid.from_dicom(
        position=(-10, -20, 30),
        orientation=(1, 0, 0, 0, 1, 0),
        pixel_spacing=(0.8, 1.2),  # (row spacing, column spacing)
        shape=SHAPE,
        slice_step=2.5,
    )
    s = Grid.from_spacing(SHAPE, spacing=(2.5, 0.8, 1.2), origin=(-10, -20, 30))
    np.testing.assert_allclose(d.affine, s.affine, atol=1e-12)
    np.testing.assert_allclose(d.affine, AFFINE, atol=1e-12)


def test_from_dicom_ffp_by_hand():
    # FFP: IOP (1,0,0, 0,-1,0); normal = (1,0,0) x (0,-1,0) = (0,0,-1)
    g = Grid.from_dicom((5, 6, 7), (1, 0, 0, 0, -1, 0), (2.0, 3.0), (4, 5, 6), slice_step=1.5)
    expected = np.array(
        [
            [0.0, 0.0, 3.0, 5.0],
            [0.0, -2.0, 0.0, 6.0],
            [-1.5, 0.0, 0.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(g.affine, expected, atol=1e-12)
    # DICOM formula for pixel (r=2, c=3) of slice 1: IPP + k*S + r*dr*colcos + c*dc*rowcos
    np.testing.assert_allclose(g.index_to_world((1, 2, 3)), [5 + 9.0, 6 - 4.0, 7 - 1.5], atol=1e-12)


def test_from_dicom_vector_step_and_decubitus():
    # HFDL: IOP (0,-1,0, 1,0,0), normal = (0,-1,0) x (1,0,0) = (0,0,1); tilted step vector
    g = Grid.from_dicom((0, 0, 0), (0, -1, 0, 1, 0, 0), (1.0, 0.5), (3, 2, 2), slice_step=(0.0, 0.3, 2.0))
    np.testing.assert_allclose(g.affine[:3, 0], [0.0, 0.3, 2.0], atol=1e-12)
    np.testing.assert_allclose(g.affine[:3, 1], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(g.affine[:3, 2], [0.0, -0.5, 0.0], atol=1e-12)
    assert not g.is_orthogonal
    assert Grid.from_dicom((0, 0, 0), (0, -1, 0, 1, 0, 0), (1.0, 0.5), (3, 2, 2), 2.0).is_orthogonal


@pytest.mark.parametrize(
    "kwargs",
    [
        {"orientation": (1, 0, 0, 0.5, 1, 0)},  # not orthogonal
        {"orientation": (0, 0, 0, 0, 1, 0)},  # zero vector
        {"orientation": (1, 0, 0, 0, 1)},  # 5 values
        {"orientation": (1, 0, 0, 0, np.nan, 0)},
        {"pixel_spacing": (0.0, 1.0)},
        {"pixel_spacing": (-1.0, 1.0)},
        {"pixel_spacing": (1.0,)},
        {"slice_step": 0.0},
        {"slice_step": (1.0, 2.0)},
    ],
)
def test_from_dicom_rejects_bad_attributes(kwargs):
    args = dict(position=(0, 0, 0), orientation=(1, 0, 0, 0, 1, 0), pixel_spacing=(1, 1), shape=(2, 2, 2), slice_step=1.0)
    args.update(kwargs)
    with pytest.raises(GeometryError):
        Grid.from_dicom(**args)


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -1, 1), (1, 1), (np.nan, 1, 1)])
def test_from_spacing_rejects_bad_spacing(spacing):
    with pytest.raises(GeometryError):
        Grid.from_spacing((2, 2, 2), spacing)


# --------------------------------------------------------------------------- equality, hashing, pickling
def test_equality_and_hash(grid):
    same = Grid(SHAPE, AFFINE.copy(), "1.2.3.4")
    assert grid == same and hash(grid) == hash(same)
    assert grid != Grid(SHAPE, AFFINE, "1.2.3.5")
    assert grid != Grid((2, 3, 5), AFFINE, "1.2.3.4")
    moved = AFFINE.copy()
    moved[0, 3] += 1e-9
    assert grid != Grid(SHAPE, moved, "1.2.3.4")
    assert grid.isclose(Grid(SHAPE, moved, "other"), atol=1e-6)
    assert grid != "not a grid"
    assert len({grid, same}) == 1


def test_empty_frame_uid_is_none():
    assert Grid(SHAPE, AFFINE, "").frame_of_reference_uid is None
    assert Grid(SHAPE, AFFINE).frame_of_reference_uid is None


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip(grid, protocol):
    grid.centers()  # populate any lazy state first
    _ = grid.spacing, grid.direction, grid.inverse_affine
    back = pickle.loads(pickle.dumps(grid, protocol=protocol))
    assert back == grid
    assert back.frame_of_reference_uid == "1.2.3.4"
    np.testing.assert_array_equal(back.affine, AFFINE)
    assert not back.affine.flags.writeable
    np.testing.assert_allclose(back.index_to_world((1, 2, 3)), [-6.4, -18.4, 32.5], atol=1e-12)


# --------------------------------------------------------------------------- property tests
def _rotation(q: tuple[float, float, float, float]) -> np.ndarray:
    """Rotation matrix of the (normalised) quaternion q = (w, x, y, z)."""
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


_unit = st.floats(-1.0, 1.0, allow_nan=False)
quaternions = st.tuples(_unit, _unit, _unit, _unit).filter(lambda q: math.fsum(v * v for v in q) > 1e-2)
spacings = st.tuples(*[st.floats(0.1, 10.0, allow_nan=False)] * 3)
offsets = st.tuples(*[st.floats(-500.0, 500.0, allow_nan=False)] * 3)
flips = st.tuples(*[st.sampled_from([-1.0, 1.0])] * 3)


@st.composite
def affines(draw) -> np.ndarray:
    rot = _rotation(draw(quaternions))
    sp = np.asarray(draw(spacings)) * np.asarray(draw(flips))  # allow left-handed index axes
    a = np.eye(4)
    a[:3, :3] = rot * sp  # column i scaled by spacing i
    a[:3, 3] = draw(offsets)
    return a


shapes = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))


@settings(max_examples=150, deadline=None)
@given(affines(), st.lists(st.tuples(*[st.floats(-1000.0, 1000.0, allow_nan=False)] * 3), min_size=1, max_size=20))
def test_world_index_round_trip(affine, points):
    g = Grid((3, 4, 5), affine)
    pts = np.asarray(points, dtype=np.float64)
    back = g.index_to_world(g.world_to_index(pts))
    scale = max(1.0, float(np.abs(pts).max()), float(np.abs(affine[:3, 3]).max()))
    np.testing.assert_allclose(back, pts, rtol=0, atol=1e-9 * scale)
    # and the other way round, for fractional indices
    idx = pts / 100.0
    np.testing.assert_allclose(g.world_to_index(g.index_to_world(idx)), idx, rtol=0, atol=1e-9 * scale)
    # index_to_world is exactly the homogeneous product with the affine (plain numpy)
    hom = np.c_[idx, np.ones(len(idx))] @ affine.T
    np.testing.assert_allclose(g.index_to_world(idx), hom[:, :3], rtol=0, atol=1e-9 * scale)


@settings(max_examples=60, deadline=None)
@given(affines(), shapes)
def test_centers_equal_index_to_world(affine, shape):
    g = Grid(shape, affine)
    c = g.centers()
    assert c.shape == (*shape, 3)
    idx = np.stack(np.indices(shape), axis=-1).astype(np.float64)
    np.testing.assert_allclose(c, g.index_to_world(idx), rtol=0, atol=1e-9)
    # and the independent formula origin + k*a0 + r*a1 + c*a2
    expected = idx @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(affines(), shapes)
def test_contains_centres_and_not_one_voxel_outside(affine, shape):
    g = Grid(shape, affine)
    idx = np.stack(np.indices(shape), axis=-1).reshape(-1, 3).astype(np.float64)
    centres = idx @ affine[:3, :3].T + affine[:3, 3]
    assert g.contains(centres).all()
    # step one voxel beyond each face, from every voxel centre on that face
    for axis in range(3):
        for side, value in ((0, -1.0), (1, float(shape[axis]))):
            face = idx[idx[:, axis] == (0 if side == 0 else shape[axis] - 1)].copy()
            face[:, axis] = value
            pts = face @ affine[:3, :3].T + affine[:3, 3]
            assert not g.contains(pts).any()
    # the corners of the voxel box are inside (boundary), a bit further is not
    lo = np.full(3, -0.5)
    hi = np.asarray(shape, float) - 0.5
    box = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    assert g.contains(box @ affine[:3, :3].T + affine[:3, 3]).all()
    centre = (hi + lo) / 2
    beyond = centre + (box - centre) * 1.01
    assert not g.contains(beyond @ affine[:3, :3].T + affine[:3, 3]).any()


@settings(max_examples=60, deadline=None)
@given(affines(), shapes)
def test_bounds_and_volume_match_linear_algebra(affine, shape):
    g = Grid(shape, affine)
    lo = np.full(3, -0.5)
    hi = np.asarray(shape, float) - 0.5
    box = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    pts = box @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(g.bounds, [pts.min(axis=0), pts.max(axis=0)], rtol=0, atol=1e-9)
    np.testing.assert_allclose(g.spacing, np.linalg.norm(affine[:3, :3], axis=0), rtol=1e-12)
    assert g.voxel_volume_cc == pytest.approx(abs(np.prod(np.linalg.norm(affine[:3, :3], axis=0))) / 1000, rel=1e-9)
    assert g.is_orthogonal
