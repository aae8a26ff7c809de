"""Pixel-edge contour tracing (rtkit._contours): exact round trip mask -> rings -> mask.

The checks here are independent of the code under test: a pure-numpy
even-odd crossing test of every pixel centre, shapely areas and validity, and
a direct count of the boundary pixel sides.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import Polygon

from rtkit import Grid
from rtkit._contours import mask_to_rings, rings_to_world

# ----------------------------------------------------------------- helpers


def even_odd_inside(points_rc: np.ndarray, rings: list[np.ndarray]) -> np.ndarray:
    """Even-odd point-in-polygon test (ray towards +column) of (row, col) points."""
    pts = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    inside = np.zeros(len(pts), dtype=bool)
    pr, pc = pts[:, 0:1], pts[:, 1:2]
    for ring in rings:
        a = np.asarray(ring, dtype=np.float64)
        b = np.roll(a, -1, axis=0)
        ar, ac, br, bc = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
        straddle = (ar > pr) != (br > pr)  # (npts, nedges)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = ac + (pr - ar) * (bc - ac) / (br - ar)
        crossings = np.count_nonzero(straddle & (pc < xc), axis=1)
        inside ^= (crossings % 2).astype(bool)
    return inside


def signed_area_col_row(ring: np.ndarray) -> float:
    """Shoelace area in the (column, row) plane."""
    x, y = ring[:, 1], ring[:, 0]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def boundary_sides(mask: np.ndarray) -> int:
    """Number of pixel sides between a mask pixel and a non-mask pixel (or the border)."""
    p = np.pad(mask, 1)
    return int(np.count_nonzero(p[1:] != p[:-1]) + np.count_nonzero(p[:, 1:] != p[:, :-1]))


def check_rings(mask: np.ndarray, rings: list[np.ndarray]) -> None:
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        assert rings == []
        return
    # every pixel centre, even-odd against all rings, reproduces the mask
    rr, cc = np.indices(mask.shape)
    centres = np.column_stack([rr.ravel(), cc.ravel()]).astype(float)
    inside = even_odd_inside(centres, rings).reshape(mask.shape)
    np.testing.assert_array_equal(inside, mask)
    polys = []
    perimeter = 0.0
    for ring in rings:
        assert ring.dtype == np.float64 and ring.ndim == 2 and ring.shape[1] == 2
        assert len(ring) >= 4 and len(ring) % 2 == 0
        # vertices on pixel corners (half-integers), inside the padded box
        np.testing.assert_array_equal(ring - 0.5, np.round(ring - 0.5))
        assert ring.min() >= -0.5 and np.all(ring.max(axis=0) <= np.array(mask.shape) - 0.5)
        # closed implicitly, no repeated vertex, axis-aligned edges, no collinear vertices
        assert len({tuple(v) for v in ring.tolist()}) == len(ring)
        e = np.roll(ring, -1, axis=0) - ring
        assert np.all((e[:, 0] == 0) != (e[:, 1] == 0))
        cross = e[:, 0] * np.roll(e, 1, axis=0)[:, 1] - e[:, 1] * np.roll(e, 1, axis=0)[:, 0]
        assert np.all(cross != 0), "collinear intermediate vertex"
        perimeter += np.abs(e).sum()
        poly = Polygon(ring[:, ::-1])
        assert poly.is_valid, shapely.is_valid_reason(poly)
        assert shapely.LinearRing(ring[:, ::-1]).is_simple
        polys.append(poly)
    # every boundary side is used exactly once
    assert perimeter == boundary_sides(mask)
    # XOR of the polygons has the pixel count as area, and covers exactly the pixels
    xor = functools.reduce(shapely.symmetric_difference, polys)
    assert xor.area == pytest.approx(mask.sum(), abs=1e-9)
    squares = shapely.union_all(
        [shapely.box(c - 0.5, r - 0.5, c + 0.5, r + 0.5) for r, c in zip(*np.nonzero(mask), strict=True)]
    )
    assert xor.symmetric_difference(squares).area == pytest.approx(0.0, abs=1e-9)
    # consistent orientation: outer boundaries positive, holes negative
    assert sum(signed_area_col_row(r) for r in rings) == pytest.approx(mask.sum())


# ------------------------------------------------------------ strategies


@st.composite
def structured_masks(draw) -> np.ndarray:
    """Rectangles, rings with holes, islands in holes, checkerboards, XORed together."""
    rows = draw(st.integers(1, 20))
    cols = draw(st.integers(1, 20))
    m = np.zeros((rows, cols), dtype=bool)
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["rect", "ring", "checker", "disk"]))
        r0, r1 = sorted(draw(st.tuples(st.integers(0, rows), st.integers(0, rows))))
        c0, c1 = sorted(draw(st.tuples(st.integers(0, cols), st.integers(0, cols))))
        shape = np.zeros_like(m)
        if kind in ("rect", "ring"):
            shape[r0:r1, c0:c1] = True
            if kind == "ring":
                shape[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = False
                if draw(st.booleans()) and r1 - r0 >= 5 and c1 - c0 >= 5:
                    shape[r0 + 2 : r1 - 2, c0 + 2 : c1 - 2] = True  # island in the hole
        elif kind == "checker":
            shape[r0:r1, c0:c1] = (np.indices((r1 - r0, c1 - c0)).sum(0) % 2) == draw(st.integers(0, 1))
        else:
            rr, cc = np.indices(m.shape)
            rad = draw(st.floats(0.5, 10))
            shape = (rr - (r0 + r1) / 2) ** 2 + (cc - (c0 + c1) / 2) ** 2 <= rad**2
        m ^= shape
    return m


random_masks = st.integers(1, 20).flatmap(
    lambda r: st.integers(1, 20).flatmap(lambda c: arrays(np.bool_, (r, c)))
)


# ------------------------------------------------------------------ tests


@settings(max_examples=400, deadline=None)
@given(random_masks)
def test_random_masks_round_trip(mask: np.ndarray) -> None:
    check_rings(mask, mask_to_rings(mask))


@settings(max_examples=400, deadline=None)
@given(structured_masks())
def test_structured_masks_round_trip(mask: np.ndarray) -> None:
    check_rings(mask, mask_to_rings(mask))


@settings(max_examples=100, deadline=None)
@given(random_masks)
def test_deterministic(mask: np.ndarray) -> None:
    a, b = mask_to_rings(mask), mask_to_rings(mask.copy())
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # each ring starts at its smallest (row, column) vertex; rings sorted by it
    starts = [tuple(r[0]) for r in a]
    assert starts == sorted(starts)
    for r in a:
        assert tuple(r[0]) == min(map(tuple, r.tolist()))


def test_rectangle_on_voxel_edges() -> None:
    m = np.zeros((4, 5), dtype=bool)
    m[1:3, 1:4] = True
    (ring,) = mask_to_rings(m)
    np.testing.assert_array_equal(ring, [[0.5, 0.5], [0.5, 3.5], [2.5, 3.5], [2.5, 0.5]])


def test_empty_and_full() -> None:
    assert mask_to_rings(np.zeros((3, 4), bool)) == []
    assert mask_to_rings(np.zeros((0, 4), bool)) == []
    (ring,) = mask_to_rings(np.ones((3, 4), bool))
    np.testing.assert_array_equal(ring, [[-0.5, -0.5], [-0.5, 3.5], [2.5, 3.5], [2.5, -0.5]])
    (ring,) = mask_to_rings(np.ones((1, 1), bool))
    assert signed_area_col_row(ring) == 1.0


def test_hole_and_island_are_separate_rings() -> None:
    m = np.ones((7, 7), dtype=bool)
    m[1:6, 1:6] = False
    m[3, 3] = True
    rings = mask_to_rings(m)
    assert len(rings) == 3
    areas = sorted(signed_area_col_row(r) for r in rings)
    assert areas == [-25.0, 1.0, 49.0]
    check_rings(m, rings)


def test_diagonal_pixels_are_separate_rings_touching_at_a_vertex() -> None:
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    rings = mask_to_rings(m)
    assert len(rings) == 2
    shared = {tuple(v) for v in rings[0].tolist()} & {tuple(v) for v in rings[1].tolist()}
    assert shared == {(0.5, 0.5)}
    check_rings(m, rings)
    # anti-diagonal too
    check_rings(~m, mask_to_rings(~m))
    assert len(mask_to_rings(~m)) == 2


def test_boundary_touching_itself_is_split() -> None:
    # a cavity that touches the outside at one corner: an outer ring and a hole ring
    m = np.ones((3, 3), dtype=bool)
    m[1, 1] = False
    m[0, 2] = False
    rings = mask_to_rings(m)
    assert len(rings) == 2
    assert sorted(signed_area_col_row(r) for r in rings) == [-1.0, 8.0]
    check_rings(m, rings)


def test_checkerboard() -> None:
    m = np.indices((6, 7)).sum(0) % 2 == 0
    rings = mask_to_rings(m)
    assert len(rings) == m.sum()
    check_rings(m, rings)


def test_non_bool_input_and_bad_shape() -> None:
    m = np.zeros((5, 5), dtype=np.uint8)
    m[1:4, 2] = 7
    check_rings(m != 0, mask_to_rings(m))
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rings(np.zeros((2, 3, 4), bool))


def test_large_mask_is_fast() -> None:
    yy, xx = np.mgrid[:512, :512]
    m = ((yy - 200) ** 2 + (xx - 180) ** 2 < 120**2) | ((yy - 380) ** 2 / 3 + (xx - 380) ** 2 < 90**2)
    m &= ~((yy - 200) ** 2 + (xx - 180) ** 2 < 40**2)
    m[300:320, 50:400] = True
    mask_to_rings(m)
    t = time.perf_counter()
    rings = mask_to_rings(m)
    elapsed = time.perf_counter() - t
    assert elapsed < 0.25, f"mask_to_rings took {elapsed * 1e3:.1f} ms on 512x512"
    xor = functools.reduce(shapely.symmetric_difference, [Polygon(r[:, ::-1]) for r in rings])
    rr, cc = np.indices(m.shape)
    np.testing.assert_array_equal(shapely.contains_xy(xor, cc, rr), m)


def test_rings_to_world_oblique_grid() -> None:
    # an oblique, anisotropic grid: the world position of index (k, r, c) by the DICOM formula
    row_cos = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    col_cos = np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)])
    normal = np.cross(row_cos, col_cos)
    pos = np.array([-250.25, 112.5, 1031.0])
    grid = Grid.from_dicom(pos, [*row_cos, *col_cos], (0.7, 1.3), (5, 8, 9), 2.5)
    m = np.zeros((8, 9), dtype=bool)
    m[2:6, 1:7] = True
    m[3, 3] = False
    rings = mask_to_rings(m)
    world = rings_to_world(rings, grid, 3)
    assert len(world) == len(rings)
    for rc, xyz in zip(rings, world, strict=True):
        expected = pos + 3 * 2.5 * normal + rc[:, :1] * 0.7 * col_cos + rc[:, 1:] * 1.3 * row_cos
        assert xyz.shape == (len(rc), 3)
        np.testing.assert_allclose(xyz, expected, atol=1e-9)
        # all on the plane of slice 3
        np.testing.assert_allclose((xyz - pos) @ normal, 7.5, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        rings_to_world([np.zeros((4, 3))], grid, 0)
