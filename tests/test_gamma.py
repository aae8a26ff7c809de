"""rtkit.gamma: answers by construction (closed forms) and against an independent brute-force search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.spatial.transform import Rotation

import rtkit
from rtkit import Dose, FrameOfReferenceError, Grid

FRAME = "1.2.826.0.1.3680043.8.498.77"


def grid(shape=(20, 24, 28), spacing=(2.0, 2.5, 2.0), direction=None, origin=(-30.0, -40.0, -20.0), frame=FRAME):
    return Grid.from_spacing(shape, spacing, origin, direction, frame)


def dose_on(g: Grid, f) -> Dose:
    """A dose given as a function of LPS position (mm)."""
    return Dose(f(g.centers()).astype(np.float64), g)


def linear_x(slope=0.05, base=2.0, shift=0.0):
    """Dose growing along x (Gy/mm), optionally shifted by ``shift`` mm towards +x."""
    return lambda p: base + slope * (p[..., 0] - shift)


def test_identical_doses_give_zero() -> None:
    g = grid()
    d = dose_on(g, lambda p: 5 + 3 * np.exp(-(p**2).sum(-1) / 400.0))
    res = rtkit.gamma(d, d)
    assert np.nanmax(res.array) <= 1e-6
    assert res.pass_rate == 100.0 and res.array.shape == g.shape and res.grid == g


def test_uniform_offset_in_a_flat_region() -> None:
    """A flat dose raised by x%: gamma = x / dose_percent everywhere (no distance helps)."""
    g = grid()
    ref = dose_on(g, lambda p: np.full(p.shape[:-1], 4.0))
    for x in (1.5, 2.4, 4.5):
        ev = Dose(ref.array * (1 + x / 100.0), g)
        res = rtkit.gamma(ref, ev, dose_percent=3, distance_mm=3)
        np.testing.assert_allclose(res.evaluated, min(x / 3.0, 2.0), rtol=1e-5)
    assert res.mean == pytest.approx(1.5, rel=1e-5) and res.pass_rate == 0.0  # 4.5% / 3% = 1.5


@pytest.mark.parametrize("shift", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("local", [False, True])
def test_shift_in_a_constant_gradient_closed_form(shift, local) -> None:
    """E(x) = R(x - s) for R = b + k x.  Gamma at r minimises |o|^2/dd^2 + (k (o - s))^2/dD^2 over the
    offset o along x (other directions only add distance): o* = k^2 s dd^2 / (dD^2 + k^2 dd^2), so
    gamma^2 = k^2 s^2 / (dD^2 + k^2 dd^2) with dD the dose criterion at r (global: 3% of the maximum)."""
    slope, dd = 0.06, 3.0
    g = grid(shape=(4, 4, 40), spacing=(2.0, 2.0, 1.5))
    ref = dose_on(g, linear_x(slope))
    ev = dose_on(g, linear_x(slope, shift=shift))
    res = rtkit.gamma(ref, ev, 3, dd, local=local, lower_cutoff_percent=0, max_gamma=3)
    r = ref.array
    d_dose = 0.03 * (r if local else r.max())
    expected = np.broadcast_to(np.sqrt(slope**2 * shift**2 / (d_dose**2 + slope**2 * dd**2)), g.shape)
    # away from the x ends: the minimiser lies up to `shift` mm towards +x
    x = g.centers()[..., 0]
    inner = (x > x.min() + 1.0) & (x < x.max() - shift - 1.0)
    np.testing.assert_allclose(res.array[inner], expected[inner], atol=2e-4)


def test_local_is_stricter_than_global_in_low_dose() -> None:
    g = grid(shape=(8, 10, 40), spacing=(2.0, 2.0, 2.0))
    ref = dose_on(g, lambda p: 0.5 + 9.5 * (p[..., 0] - p[..., 0].min()) / np.ptp(p[..., 0]))
    ev = Dose(ref.array * 1.04, g)  # 4 % everywhere
    glob = rtkit.gamma(ref, ev, 3, 3, lower_cutoff_percent=0)
    loc = rtkit.gamma(ref, ev, 3, 3, local=True, lower_cutoff_percent=0)
    low = ref.array < 3.0
    assert np.all(loc.array[low] > glob.array[low])  # the local criterion is smaller there
    assert loc.pass_rate < glob.pass_rate


def test_cutoff_nan_and_normalization() -> None:
    g = grid()
    ref = dose_on(g, lambda p: 10 * np.exp(-(p**2).sum(-1) / 300.0))
    ev = Dose(ref.array * 1.01, g)
    res = rtkit.gamma(ref, ev, lower_cutoff_percent=10)
    below = ref.array < 1.0
    assert np.all(np.isnan(res.array[below])) and np.all(np.isfinite(res.array[~below]))
    assert res.evaluated.size == int((~below).sum())
    half = rtkit.gamma(ref, ev, normalization=5.0, lower_cutoff_percent=10)  # cutoff 0.5 Gy, dD 0.15 Gy
    assert half.evaluated.size > res.evaluated.size and half.normalization_gy == 5.0
    counts, edges = res.histogram(20)
    assert counts.sum() == res.evaluated.size and edges[-1] == res.max_gamma


def test_film_plane_and_profile() -> None:
    """2-D: a film plane against a TPS plane (searched in plane); 1-D: a profile."""
    plane = Grid.from_spacing((1, 60, 60), (1.0, 0.5, 0.5), (0, -15, -15), None, FRAME)
    ref = dose_on(plane, lambda p: 2 + 2 * np.tanh(p[..., 0] / 4.0))  # a penumbra along x
    ev = dose_on(plane, lambda p: 2 + 2 * np.tanh((p[..., 0] - 1.0) / 4.0))  # shifted 1 mm
    res = rtkit.gamma(ref, ev, 3, 3, lower_cutoff_percent=0)
    assert res.array.shape == (1, 60, 60) and np.isfinite(res.array).all()
    # the best match lies along x in the plane: at most the pure 1 mm shift, 1/3
    assert np.nanmax(res.array) <= 1.0 / 3.0 + 1e-6
    profile = Grid.from_spacing((1, 1, 200), (1, 1, 0.25), (0, 0, -25), None, FRAME)
    rp = dose_on(profile, lambda p: 2 + 2 * np.tanh(p[..., 0] / 4.0))
    ep = dose_on(profile, lambda p: 2 + 2 * np.tanh((p[..., 0] - 1.0) / 4.0))
    res1 = rtkit.gamma(rp, ep, 3, 3, lower_cutoff_percent=0)
    np.testing.assert_allclose(res1.array[0, 0, 20:-20], res.array[0, 30, 20:-20].max(), atol=0.35)
    assert np.nanmax(res1.array) <= 1.0 / 3.0 + 1e-6


def _brute(ref: Dose, ev: Dose, dp: float, dta: float, local: bool, cutoff: float, step: float) -> np.ndarray:
    """Independent exhaustive search: every offset of a fine lattice, scipy's trilinear interpolation."""
    g = ref.grid
    norm = ref.array.max()
    out = np.full(g.shape, np.nan)
    n = int(dta / step)
    ax = np.arange(-n, n + 1) * step
    o = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    o = o[(o**2).sum(1) <= dta**2]  # gamma <= 1 is found exactly; larger values are capped at 1
    pts = g.centers().reshape(-1, 3)
    r = ref.array.reshape(-1)
    for i in np.flatnonzero(r >= cutoff / 100 * norm):
        q = ev.grid.world_to_index(pts[i] + o)
        v = ndimage.map_coordinates(ev.array, q.T, order=1, mode="constant", cval=np.nan)
        inside = np.all((q >= 0) & (q <= np.array(ev.grid.shape) - 1), axis=1)
        dd = dp / 100 * (r[i] if local else norm)
        f = (o**2).sum(1) / dta**2 + (v - r[i]) ** 2 / dd**2
        out.reshape(-1)[i] = np.sqrt(np.min(np.where(inside, f, np.inf)))
    return np.minimum(out, 1.0)


@pytest.mark.parametrize("local", [False, True])
def test_agrees_with_brute_force_on_a_smooth_dose(local) -> None:
    """A smooth field, evaluated on a rotated, shifted grid, against an exhaustive 0.15 mm search.

    The search is continuous, so rtkit may be below the exhaustive lattice (by what the lattice
    misses between its points, most in steep gradients); above it means a missed minimum: never by
    more than 0.01, global or local.
    """
    rng = np.random.default_rng(3)
    g = grid(shape=(10, 12, 12), spacing=(3.0, 2.5, 2.5), origin=(-14, -14, -14))
    centres = rng.uniform(-12, 12, (4, 3))

    def field(p, scale=1.0):
        return scale * sum(3 * np.exp(-((p - c) ** 2).sum(-1) / 60.0) for c in centres) + 0.5

    rot = Rotation.from_euler("xyz", [3, -2, 4], degrees=True).as_matrix() @ np.array(
        [[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    ge = Grid.from_spacing((12, 14, 14), (2.5, 2.5, 2.5), (-16, -17, -16), rot, FRAME)
    ref = dose_on(g, field)
    ev = dose_on(ge, lambda p: field(p - np.array([0.8, -0.5, 0.6]), 1.02))
    res = rtkit.gamma(ref, ev, 3, 3, local=local, lower_cutoff_percent=30)
    truth = _brute(ref, ev, 3, 3, local, 30, 0.15)
    both = np.isfinite(res.array) & np.isfinite(truth) & (truth < 1.0)
    assert both.sum() > 100
    above = res.array[both] - truth[both]
    assert above.max() <= 0.01


@settings(max_examples=8, deadline=None)
@given(st.floats(0.2, 2.0), st.floats(0.01, 0.2), st.floats(1.0, 3.0), st.booleans())
def test_linear_dose_shift_property(shift, slope, dta, local) -> None:
    """Property: in any constant gradient the closed form holds (the search is exact there)."""
    g = grid(shape=(3, 3, 40), spacing=(2.0, 2.0, 1.0))
    ref = dose_on(g, linear_x(slope, base=10.0))  # positive everywhere (x >= -30 mm)
    ev = dose_on(g, linear_x(slope, base=10.0, shift=shift))
    res = rtkit.gamma(ref, ev, 3, dta, local=local, lower_cutoff_percent=0, max_gamma=3)
    d_dose = 0.03 * (ref.array if local else ref.array.max())
    expected = np.broadcast_to(np.sqrt(slope**2 * shift**2 / (d_dose**2 + slope**2 * dta**2)), g.shape)
    x = g.centers()[..., 0]
    reach = shift
    inner = (x > x.min() + 0.5) & (x < x.max() - reach - 0.5)
    if inner.any():
        np.testing.assert_allclose(res.array[inner], np.minimum(expected[inner], 3), rtol=1e-3, atol=1e-4)


def test_errors_and_determinism() -> None:
    g = grid()
    d = dose_on(g, lambda p: 5 + (p**2).sum(-1) / 500.0)
    other = Dose(d.array, grid(frame="1.2.3.999"))
    with pytest.raises(FrameOfReferenceError):
        rtkit.gamma(d, other)
    with pytest.raises(ValueError):
        rtkit.gamma(d, d, dose_percent=0)
    ev = Dose(d.array * 1.03, g)
    a, b = rtkit.gamma(d, ev), rtkit.gamma(d, ev)
    np.testing.assert_array_equal(a.array, b.array)
    assert "pass rate" in repr(a)
    far = Dose(d.array, grid(origin=(500.0, 500.0, 500.0)))  # 0.9 m away: nothing within reach
    with pytest.warns(rtkit.RTKitWarning, match="no evaluated dose"):
        res = rtkit.gamma(d, far)
    assert np.isnan(res.array).all()


def test_plots() -> None:
    """The gamma map and histogram draw (matplotlib is in the test extra; Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = grid(shape=(6, 10, 12))
    ref = dose_on(g, lambda p: 5 + (p**2).sum(-1) / 500.0)
    res = rtkit.gamma(ref, Dose(ref.array * 1.04, g))
    fig, (a, b) = plt.subplots(1, 2)
    assert res.plot(a) is a and a.images
    assert res.plot(b, kind="histogram") is b and "pass rate" in b.get_title()
    with pytest.raises(ValueError, match="kind"):
        res.plot(a, kind="surface")
    plt.close(fig)


# ---------------------------------------------------------------- the exact search (issue 7)
def _exact(ref: Dose, ev: Dose, dp: float, dta: float, local: bool, idx: np.ndarray, cap: float = 1.0,
           step: float = 0.1, starts: int = 4) -> np.ndarray:
    """Gamma at reference voxels ``idx`` (flat), independent of rtkit: every offset of a ``step`` mm
    lattice in the ball of radius ``cap * dta``, the dose trilinear between the evaluated voxel
    centres (scipy, nothing outside them), then Nelder-Mead from the ``starts`` best lattice offsets.
    Values at or above ``cap`` are ``cap``."""
    from scipy import optimize

    g = ref.grid
    norm = ref.array.max()
    n = int(np.ceil(cap * dta / step))
    ax = np.arange(-n, n + 1) * step
    o = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    o = o[(o**2).sum(1) <= (cap * dta) ** 2]
    pts = g.centers().reshape(-1, 3)
    r = ref.array.reshape(-1)
    hi = np.array(ev.grid.shape) - 1.0
    active = hi > 0
    out = np.full(len(idx), np.nan)

    def f(i: int, off: np.ndarray) -> np.ndarray:
        q = ev.grid.world_to_index(pts[i] + np.atleast_2d(off))
        inside = np.all((q >= -1e-9) & (q <= hi + 1e-9) | ~active & (np.abs(q) <= 0.5), axis=1)
        v = ndimage.map_coordinates(ev.array, np.clip(q, 0, hi).T, order=1, mode="nearest")
        dd = dp / 100 * (r[i] if local else norm)
        val = (np.atleast_2d(off) ** 2).sum(1) / dta**2 + (v - r[i]) ** 2 / dd**2
        return np.where(inside, val, np.inf)

    for j, i in enumerate(idx):
        vals = f(i, o)
        best = vals.min()
        for k in np.argsort(vals)[:starts]:
            if not np.isfinite(vals[k]):
                break
            simplex = o[k] + np.vstack([np.zeros(3), np.eye(3) * step / 2])
            sol = optimize.minimize(lambda x, i=i: float(f(i, x)[0]), o[k], method="Nelder-Mead",
                                    options={"xatol": 1e-7, "fatol": 1e-12, "initial_simplex": simplex})
            best = min(best, sol.fun)
        out[j] = np.sqrt(min(best, cap**2)) if np.isfinite(best) else np.nan
    return out


@pytest.mark.parametrize("local", [False, True])
def test_exact_against_dense_search_and_descent(local) -> None:
    """Random smooth field on a rotated, shifted evaluated grid of coarse cells (so the trilinear
    dose bends inside them): rtkit within 0.01 of a dense search refined by Nelder-Mead, both ways."""
    rng = np.random.default_rng(11)
    rot = Rotation.from_euler("zyx", [17, -9, 24], degrees=True).as_matrix()
    ge = Grid.from_spacing((9, 9, 10), (3.0, 2.5, 2.8), (-13, -11, -12), rot, FRAME)
    centre = ge.index_to_world((np.array(ge.shape) - 1) / 2.0)
    g = grid(shape=(8, 9, 9), spacing=(2.0, 2.0, 2.0), origin=tuple(centre - (8, 8, 7)))  # all within reach
    field = ndimage.gaussian_filter(rng.uniform(0, 10, ge.shape), 0.9) * 4 + 2
    ev = Dose(field, ge)
    # reference: the evaluated dose moved by ~1 mm, scaled, plus a little noise
    idx = ge.world_to_index(g.centers().reshape(-1, 3) + np.array([0.7, -0.6, 0.5]))
    rv = ndimage.map_coordinates(field, idx.T, order=1, mode="nearest") * 1.02 + rng.normal(0, 0.05, len(idx))
    ref = Dose(rv.reshape(g.shape), g)
    res = rtkit.gamma(ref, ev, 3, 3, local=local, lower_cutoff_percent=0, max_gamma=1)
    sample = np.sort(rng.choice(np.flatnonzero(np.isfinite(res.array.reshape(-1))), 80, replace=False))
    truth = _exact(ref, ev, 3, 3, local, sample)
    got = res.array.reshape(-1)[sample]
    keep = truth < 1.0
    assert keep.sum() > 40
    np.testing.assert_allclose(got[keep], truth[keep], atol=0.01)


@pytest.mark.parametrize("local", [False, True])
def test_minimum_on_a_kink_of_the_trilinear_dose(local) -> None:
    """A dose peak at a voxel plane (x = 0) and a voxel line (x = y = 0): the trilinear dose is
    D0 - k |x| (- k |y|) exactly, with kinks on cell faces and edges.  Reference doses above the peak
    are best matched on the kink; the exact value by a dense search of the analytic dose."""
    d0, k, dta = 10.0, 0.4, 3.0
    ge = grid(shape=(7, 11, 11), spacing=(2.5, 2.5, 2.5), origin=(-12.5, -12.5, -7.5))
    for both in (False, True):
        ev = dose_on(ge, lambda p, both=both: d0 - k * np.abs(p[..., 0]) - (k * np.abs(p[..., 1]) if both else 0))
        gr = Grid.from_spacing((3, 5, 6), (1.0, 0.45, 0.35), (-0.8, -0.9, -1.0), None, FRAME)
        ref = Dose(np.full(gr.shape, d0 * 1.012), gr)
        res = rtkit.gamma(ref, ev, 3, dta, local=local, lower_cutoff_percent=0)
        dd = 0.03 * d0 * 1.012  # global: of the reference maximum; local: of the (uniform) dose
        s = np.linspace(-3.0, 3.0, 1201)
        X, Y = np.meshgrid(s, s if both else np.zeros(1), indexing="ij")
        e = d0 - k * np.abs(X) - (k * np.abs(Y) if both else 0)
        for p, got in zip(gr.centers().reshape(-1, 3), res.array.reshape(-1), strict=True):
            f = ((X - p[0]) ** 2 + (Y - p[1]) ** 2 * both) / dta**2 + (e - ref.array.flat[0]) ** 2 / dd**2
            assert got == pytest.approx(np.sqrt(f.min()), abs=2e-3)


def test_minimum_on_the_evaluated_grid_boundary() -> None:
    """Reference voxels beyond the evaluated grid (no extrapolation): in a constant gradient the best
    match is on the boundary face, gamma^2 = a^2 (1 / dd^2 + k^2 / dD^2) at a distance a outside."""
    k, dta = 0.05, 3.0
    ge = Grid.from_spacing((5, 6, 8), (2.0, 2.0, 2.5), (0.0, -5.0, -4.0), None, FRAME)  # x >= 0
    ev = dose_on(ge, linear_x(k, base=5.0))
    gr = Grid.from_spacing((2, 2, 5), (2.0, 2.0, 0.5), (-2.2, -1.0, 0.0), None, FRAME)  # x -2.2 .. -0.2
    ref = dose_on(gr, linear_x(k, base=5.0))
    res = rtkit.gamma(ref, ev, 3, dta, lower_cutoff_percent=0)
    a = -gr.centers()[..., 0]
    dd = 0.03 * ref.array.max()
    np.testing.assert_allclose(res.array, np.sqrt(a**2 * (1 / dta**2 + k**2 / dd**2)), atol=1e-4)


def test_independent_of_chunking_and_batches(monkeypatch) -> None:
    """Every point's gamma is its own: the same, bit for bit, whatever the chunk and batch sizes."""
    import importlib

    mod = importlib.import_module("rtkit.gamma")
    rng = np.random.default_rng(5)
    g = grid(shape=(6, 7, 8))
    ev = Dose(ndimage.gaussian_filter(rng.uniform(0, 10, g.shape), 1.0), g)
    ref = Dose(ndimage.shift(ev.array, (0.3, -0.4, 0.2), order=1, mode="nearest") * 1.03, g)
    a = rtkit.gamma(ref, ev, 2, 2, local=True, lower_cutoff_percent=0)
    for name, value in (("POINT_CHUNK", 7), ("PAIR_BATCH", 13), ("CELL_BATCH", 5)):
        monkeypatch.setattr(mod, name, value)
    b = rtkit.gamma(ref, ev, 2, 2, local=True, lower_cutoff_percent=0)
    np.testing.assert_array_equal(a.array, b.array)


def test_resolution_is_the_convergence_tolerance() -> None:
    """``resolution`` (mm) is the step below which the in-cell search stops: coarser is never far
    off in a smooth field and never below the fine answer (gamma is a minimum, found from above)."""
    g = grid(shape=(8, 9, 10))
    ref = dose_on(g, lambda p: 5 + 3 * np.exp(-(p**2).sum(-1) / 300.0))
    ev = dose_on(g, lambda p: 5.1 + 3 * np.exp(-((p - 1.2) ** 2).sum(-1) / 300.0))
    fine = rtkit.gamma(ref, ev, 2, 2, local=True, lower_cutoff_percent=0)
    coarse = rtkit.gamma(ref, ev, 2, 2, local=True, lower_cutoff_percent=0, resolution=0.2)
    assert fine.resolution_mm == pytest.approx(0.002) and coarse.resolution_mm == 0.2
    d = coarse.array - fine.array
    assert d.min() >= -1e-6 and d.max() <= 0.02
    with pytest.raises(ValueError, match="resolution"):
        rtkit.gamma(ref, ev, resolution=0)


def test_a_match_two_cells_away_beyond_a_near_face() -> None:
    """The branch and bound must not drop a point whose best match lies two cells away just beyond a
    near face, when the other neighbours (beyond the far faces) are out of reach: evaluated voxels
    1 mm apart along x, 3 mm across; the dose reaches the reference dose two cells from the point."""
    dta, dd = 3.0, 0.03 * 5.3
    ge = Grid.from_spacing((3, 3, 8), (3.0, 3.0, 1.0), (-2.0, -3.0, -3.0), None, FRAME)  # x -2 .. 5 mm
    xs = np.arange(8) - 2.0
    prof = np.where(xs >= 3.0, 5.3, 5.3 - 0.7 * dd)  # at x = 3 mm and beyond: the reference dose
    ev = Dose(np.broadcast_to(prof, ge.shape).copy(), ge)
    # x 0.93 .. 0.99 mm: gamma 0.7 in the point's cell and the neighbours across its near face (x = 1)
    # and edges; the corner neighbours, beyond two far faces 1.5 mm away, are out of reach
    gr = Grid.from_spacing((1, 1, 3), (1.0, 1.0, 0.03), (0.93, -1.5, 1.5), None, FRAME)
    ref = Dose(np.full(gr.shape, 5.3), gr)
    res = rtkit.gamma(ref, ev, 3, dta, lower_cutoff_percent=0)
    s = np.linspace(-2.0, 5.0, 70001)
    e = np.interp(s, xs, prof)
    for x, got in zip(gr.centers()[..., 0].ravel(), res.array.ravel(), strict=True):
        exact = np.sqrt((((s - x) / dta) ** 2 + ((e - 5.3) / dd) ** 2).min())
        assert exact < 0.7 - 0.05  # below the best of the neighbouring cells
        assert got == pytest.approx(exact, abs=1e-3)
