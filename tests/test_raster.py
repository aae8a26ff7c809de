"""Exact in-plane rasterisation (rtkit._raster) against shapely, pixel by pixel.

Expected values are computed here from the test's own polygons with shapely:

* ``coverage``: for every pixel, the area of (unit pixel square) intersected
  with the polygon region (``shapely.intersection`` of boxes and polygon);
* ``centers_inside``: ``shapely.contains_xy`` of the pixel centre in the
  even-odd region (the symmetric difference of the ring polygons), ignoring
  centres closer than 1e-9 to a ring (where inside/outside is a convention).

Coordinates are ``(row, column)`` index coordinates; pixel ``(r, c)`` is the
unit square centred on ``(r, c)``.  Shapely receives the same numbers as
``(x, y) = (row, column)``: areas and insideness do not care about the naming.
"""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from rtkit._raster import centers_inside, coverage

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------- references


def pixel_boxes(shape):
    R, C = shape
    r, c = np.meshgrid(np.arange(R, dtype=float), np.arange(C, dtype=float), indexing="ij")
    return r, c, shapely.box(r - 0.5, c - 0.5, r + 0.5, c + 0.5)


def ref_coverage(region, shape):
    """Area of each unit pixel square inside ``region`` (shapely geometry)."""
    _, _, boxes = pixel_boxes(shape)
    return shapely.area(shapely.intersection(boxes, region))


def even_odd_region(rings):
    region = None
    for ring in rings:
        poly = Polygon(ring)
        assert poly.is_valid
        region = poly if region is None else shapely.symmetric_difference(region, poly)
    return region


def ref_centers(rings, shape):
    """(inside, decidable): shapely containment of pixel centres in the even-odd region."""
    r, c, _ = pixel_boxes(shape)
    region = even_odd_region(rings)
    inside = shapely.contains_xy(region, r, c)
    boundary = shapely.union_all([Polygon(ring).exterior for ring in rings])
    dist = shapely.distance(boundary, shapely.points(r, c))
    return inside, dist > 1e-9


def signed_area(ring):
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def oriented(ring, sign):
    """``ring`` with signed area of sign ``sign`` (+1 counter-clockwise in (row, col))."""
    return ring if np.sign(signed_area(ring)) == sign else ring[::-1].copy()


def ref_centroids(region, shape):
    """Centroid offsets (row, col) of each pixel's covered part, by shapely intersection."""
    oy, ox = np.zeros(shape), np.zeros(shape)
    for r in range(shape[0]):
        for c in range(shape[1]):
            part = region.intersection(shapely.box(r - 0.5, c - 0.5, r + 0.5, c + 0.5))
            if part.area > 1e-9:
                oy[r, c], ox[r, c] = part.centroid.x - r, part.centroid.y - c
    return oy, ox


def check_coverage(rings, region, shape):
    got = coverage(rings, shape)
    assert got.shape == shape
    expected = ref_coverage(region, shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    # the same pass with first moments: the covered part's centroid in every pixel
    frac, oy, ox = coverage(rings, shape, moments=True)
    np.testing.assert_allclose(frac, got, rtol=0, atol=1e-12)
    ry, rx = ref_centroids(region, shape)
    big = expected > 1e-6  # the centroid of a sliver is ill-conditioned in both implementations
    np.testing.assert_allclose(oy[big], ry[big], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ox[big], rx[big], rtol=0, atol=1e-6)


def check_centers(rings, shape):
    got = centers_inside(rings, shape)
    assert got.shape == shape and got.dtype == bool
    inside, ok = ref_centers(rings, shape)
    np.testing.assert_array_equal(got[ok], inside[ok])


# --------------------------------------------------------------------- strategies

coord = st.floats(-6.0, 26.0, allow_nan=False, allow_infinity=False)
window = st.tuples(st.integers(1, 20), st.integers(1, 20))


@st.composite
def star_polygon(draw, center=None, r_min=0.3, r_max=12.0, n_max=14):
    """A simple polygon star-shaped around its centre (angles increasing, every gap < pi)."""
    n = draw(st.integers(3, n_max))
    cx, cy = center if center is not None else (draw(coord), draw(coord))
    # angular gaps with weights in [1, 1.9]: the largest gap is < 0.49 of the turn
    weights = np.array(draw(st.lists(st.floats(1.0, 1.9), min_size=n, max_size=n)))
    start = draw(st.floats(0.0, 2 * np.pi))
    ang = start + 2 * np.pi * np.cumsum(np.r_[0.0, weights[:-1]]) / weights.sum()
    radii = np.array(draw(st.lists(st.floats(r_min, r_max), min_size=n, max_size=n)))
    ring = np.stack([cx + radii * np.cos(ang), cy + radii * np.sin(ang)], axis=1)
    poly = Polygon(ring)
    assume(poly.is_valid and poly.area > 1e-6)
    return ring, (cx, cy)


@st.composite
def convex_polygon(draw):
    pts = np.array(draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=12)))
    hull = shapely.convex_hull(shapely.multipoints(pts))
    assume(hull.geom_type == "Polygon" and hull.area > 1e-3)
    ring = np.asarray(hull.exterior.coords)[:-1]
    # drop (nearly) collinear vertices that shapely keeps so the ring is a clean polygon
    assume(Polygon(ring).is_valid)
    return ring


@st.composite
def nested_stars(draw, depth):
    """``depth`` nested rings: a star polygon and copies scaled about its centre."""
    outer, (cx, cy) = draw(star_polygon(r_min=2.0))
    factors = sorted(draw(st.lists(st.floats(0.15, 0.9), min_size=depth - 1, max_size=depth - 1, unique=True)),
                     reverse=True)
    assume(all(a - b > 0.05 for a, b in zip([1.0, *factors], factors, strict=False)))
    c = np.array([cx, cy])
    rings = [outer] + [c + f * (outer - c) for f in factors]
    # a star-shaped polygon scaled about a kernel point lies inside the original
    for a, b in zip(rings, rings[1:], strict=False):
        assume(Polygon(a).contains(Polygon(b)) and Polygon(b).area > 1e-4)
    return rings


# --------------------------------------------------------------------- coverage


@SETTINGS
@given(convex_polygon(), window)
def test_coverage_convex(ring, shape):
    check_coverage([ring], Polygon(ring), shape)


@SETTINGS
@given(star_polygon(), window, st.booleans(), st.booleans())
def test_coverage_star_any_orientation_open_or_closed(poly, shape, reverse, closed):
    ring, _ = poly
    region = Polygon(ring)
    if reverse:
        ring = ring[::-1]
    if closed:
        ring = np.vstack([ring, ring[:1]])
    check_coverage([ring], region, shape)


@SETTINGS
@given(nested_stars(2), window, st.sampled_from([1, -1]))
def test_coverage_polygon_with_hole(rings, shape, sign):
    outer, hole = oriented(rings[0], sign), oriented(rings[1], -sign)
    region = Polygon(outer, [hole])
    assert region.is_valid
    check_coverage([outer, hole], region, shape)


@SETTINGS
@given(nested_stars(3), window)
def test_coverage_island_inside_hole(rings, shape):
    outer, hole, island = oriented(rings[0], 1), oriented(rings[1], -1), oriented(rings[2], 1)
    region = shapely.union(Polygon(outer, [hole]), Polygon(island))
    check_coverage([outer, hole, island], region, shape)


@SETTINGS
@given(star_polygon(r_max=6.0), st.floats(0, 2 * np.pi), st.data(), window)
def test_coverage_two_disjoint_polygons(a, phi, data, shape):
    # the second centre 12.5 mm from the first: radii <= 6 keep them apart
    ca = np.array(a[1])
    b = data.draw(star_polygon(center=tuple(ca + 12.5 * np.array([np.cos(phi), np.sin(phi)])), r_max=6.0))
    pa, pb = Polygon(a[0]), Polygon(b[0])
    assert pa.distance(pb) > 0.4
    check_coverage([oriented(a[0], 1), oriented(b[0], 1)], shapely.union(pa, pb), shape)
    check_centers([a[0], b[0]], shape)


@SETTINGS
@given(
    st.integers(0, 7), st.integers(0, 7),
    st.floats(-0.45, 0.45), st.floats(-0.45, 0.45),
    st.data(),
)
def test_coverage_tiny_polygon_inside_one_pixel(r, c, dr, dc, data):
    # a star polygon of radius < 0.05 around a point at least 0.05 from the pixel edges
    ring, _ = data.draw(star_polygon(center=(r + dr, c + dc), r_min=1e-3, r_max=0.049))
    shape = (8, 8)
    got = coverage([ring], shape)
    expected = np.zeros(shape)
    expected[r, c] = Polygon(ring).area
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, ref_coverage(Polygon(ring), shape), rtol=0, atol=1e-12)


def test_coverage_polygon_larger_than_window_and_outside():
    # a square covering the whole window: every pixel fully covered
    big = np.array([[-10.0, -10.0], [30.0, -10.0], [30.0, 30.0], [-10.0, 30.0]])
    np.testing.assert_allclose(coverage([big], (5, 7)), 1.0, atol=1e-12)
    # a square entirely outside the window (left, right, above, below): nothing
    for dx, dy in [(-50, 0), (50, 0), (0, -50), (0, 50)]:
        ring = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 3.0], [0.0, 3.0]]) + [dx, dy]
        assert not coverage([ring], (5, 7)).any()
        assert not centers_inside([ring], (5, 7)).any()


def test_coverage_axis_aligned_rectangle_closed_form():
    # rows [0.25, 2.75] over pixels [-.5,.5], [.5,1.5], [1.5,2.5], [2.5,3.5]: 0.25, 1, 1, 0.25;
    # columns [-0.5, 1.1] over [-.5,.5], [.5,1.5], [1.5,2.5]: 1, 0.6, 0
    ring = np.array([[0.25, -0.5], [2.75, -0.5], [2.75, 1.1], [0.25, 1.1]])
    expected = np.outer([0.25, 1.0, 1.0, 0.25], [1.0, 0.6, 0.0])
    np.testing.assert_allclose(coverage([ring], (4, 3)), expected, atol=1e-12)


def test_empty_inputs():
    assert coverage([], (3, 4)).shape == (3, 4) and not coverage([], (3, 4)).any()
    assert not centers_inside([], (3, 4)).any()
    tri = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    assert coverage([tri], (0, 4)).shape == (0, 4)
    assert centers_inside([tri], (3, 0)).shape == (3, 0)


# --------------------------------------------------------------------- centres


@SETTINGS
@given(convex_polygon(), window)
def test_centers_convex(ring, shape):
    check_centers([ring], shape)


@SETTINGS
@given(star_polygon(), window, st.booleans())
def test_centers_star(poly, shape, reverse):
    ring = poly[0][::-1] if reverse else poly[0]
    check_centers([ring], shape)


@SETTINGS
@given(nested_stars(2), window, st.booleans())
def test_centers_hole_any_orientation(rings, shape, same):
    # even-odd: the orientation of the hole ring does not matter
    outer, hole = oriented(rings[0], 1), oriented(rings[1], 1 if same else -1)
    check_centers([outer, hole], shape)
    inside, ok = ref_centers([outer, hole], shape)
    np.testing.assert_array_equal(
        inside[ok],
        shapely.contains_xy(Polygon(outer, [hole]), *np.indices(shape).astype(float))[ok],
    )


@SETTINGS
@given(nested_stars(3), window, st.lists(st.booleans(), min_size=3, max_size=3))
def test_centers_island_inside_hole_even_odd(rings, shape, flips):
    # every ring in the same or random orientation: still even-odd
    rings = [r[::-1] if f else r for r, f in zip(rings, flips, strict=True)]
    got = centers_inside(rings, shape)
    region = shapely.union(Polygon(rings[0], [rings[1]]), Polygon(rings[2]))
    r, c = np.indices(shape).astype(float)
    boundary = shapely.union_all([Polygon(x).exterior for x in rings])
    ok = shapely.distance(boundary, shapely.points(r, c)) > 1e-9
    np.testing.assert_array_equal(got[ok], shapely.contains_xy(region, r, c)[ok])


@SETTINGS
@given(nested_stars(4), window)
def test_centers_four_nested_rings(rings, shape):
    check_centers(rings, shape)


def test_centers_on_lattice_points_known_pattern():
    # diamond |r - 3| + |c - 3| < 2.5 has exactly the 13 centres with |dr| + |dc| <= 2
    ring = np.array([[3.0, 0.5], [5.5, 3.0], [3.0, 5.5], [0.5, 3.0]])
    r, c = np.indices((7, 7))
    expected = (np.abs(r - 3) + np.abs(c - 3)) <= 2
    np.testing.assert_array_equal(centers_inside([ring], (7, 7)), expected)
    assert centers_inside([ring], (7, 7)).sum() == 13
