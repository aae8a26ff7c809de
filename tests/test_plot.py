"""Image tests for rtkit.plot: figures rendered with Agg and checked pixel by pixel.

The phantom is defined in patient coordinates (LPS, mm) and sampled on grids
of the shared orientation corpus (``builders.ORIENTATIONS``: head-first,
feet-first, prone, decubitus, oblique; non-square pixels), so every
acquisition must give the same picture.  Expected pixel positions come from
the phantom's definition (mm) through the Axes' data transform; colours are
detected in the rendered RGB buffer.
"""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from builders import ORIENTATIONS  # noqa: E402

import rtkit  # noqa: E402
import rtkit.plot as rplot  # noqa: E402
from rtkit.structures import Contour, Structure, StructureSet  # noqa: E402

MAGENTA = (255, 0, 255)
LEFT_MARK = (27.5, -17.5)  # (x, y) mm: a 500 HU block at the patient's left-anterior, |z| < 30
HEAD_Z = 15.0  # a 1000 HU block above z = 15 mm (superior, towards the head)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------ phantom
def phantom_hu(xyz: np.ndarray) -> np.ndarray:
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    hu = np.full(x.shape, -1000.0)
    body = (np.abs(x) < 45) & (np.abs(y) < 35)
    hu[body] = 0.0
    hu[body & (np.abs(x - LEFT_MARK[0]) < 7.5) & (np.abs(y - LEFT_MARK[1]) < 7.5)] = 500.0
    hu[body & (z > HEAD_Z) & (np.abs(x) < 10) & (np.abs(y) < 10)] = 1000.0
    return hu


def grid_for(orientation: str, shape=(24, 40, 60), pixel_spacing=(3.0, 2.0), step=2.5, frame="1.2.3.ct"):
    """A grid of the corpus orientation, centred on the origin (non-square pixels)."""
    iop = ORIENTATIONS[orientation]
    g = rtkit.Grid.from_dicom((0, 0, 0), iop, pixel_spacing, shape, step)
    centre = g.index_to_world((np.asarray(shape) - 1) / 2.0)
    return rtkit.Grid.from_dicom(-centre, iop, pixel_spacing, shape, step, frame_of_reference_uid=frame)


def ct_for(orientation: str, **kwargs) -> rtkit.Image:
    g = grid_for(orientation, **kwargs)
    return rtkit.Image(phantom_hu(g.centers()).astype(np.int16), g, "CT")


def marker_structure(z_planes=(20.0, 22.5, 25.0, 27.5), half=8.0, color=MAGENTA, name="HEAD_MARK") -> Structure:
    """A square ROI (+-half mm in x and y) on axial planes, superior."""
    contours = [Contour(np.array([[-half, -half, z], [half, -half, z], [half, half, z], [-half, half, z]]))
                for z in z_planes]
    return Structure(name, 1, contours, color=color, type="ORGAN", frame_of_reference_uid="1.2.3.ct")


# ------------------------------------------------------------------ rendering helpers
def new_ax():
    _, ax = plt.subplots(figsize=(5, 5), dpi=100)
    return ax


def render(ax) -> np.ndarray:
    fig = ax.figure
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def pixel(ax, x: float, y: float) -> tuple[int, int]:
    """(row, column) in the rendered buffer of Axes data point (x, y) mm."""
    px, py = ax.transData.transform((x, y))
    height = ax.figure.canvas.get_width_height()[1]
    return int(height - py), int(px)


def patch(rgb: np.ndarray, rc: tuple[int, int], radius: int = 2) -> np.ndarray:
    r, c = rc
    return rgb[max(r - radius, 0): r + radius + 1, max(c - radius, 0): c + radius + 1].reshape(-1, 3)


def is_magenta(px: np.ndarray) -> np.ndarray:
    return (px[..., 0] - px[..., 1] > 100) & (px[..., 2] - px[..., 1] > 100)


def saturation(px: np.ndarray) -> np.ndarray:
    return px.max(axis=-1) - px.min(axis=-1)


def axes_box(ax) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) of the Axes in the rendered buffer."""
    bb = ax.get_window_extent()
    height = ax.figure.canvas.get_width_height()[1]
    return int(height - bb.y1) + 1, int(height - bb.y0) - 1, int(bb.x0) + 1, int(bb.x1) - 1


def label_texts(ax) -> dict[str, tuple[float, float]]:
    return {t.get_text(): t.get_position() for t in ax.texts if t.get_gid() == "rtkit-orientation"}


# ------------------------------------------------------------------ orientation
ALL = ("HFS", "FFS", "HFP", "FFP", "HFDL", "FFDR", "OBLIQUE")


@pytest.mark.parametrize("orientation", ALL)
def test_axial_view_is_patient_aligned_for_every_acquisition(orientation):
    ct = ct_for(orientation)
    ax = rplot.show_slice(ct, z=0.0, window=(250, 1500), structures=False, ax=new_ax())
    rgb = render(ax)
    grey = lambda x, y: float(np.median(patch(rgb, pixel(ax, x, y), 1).mean(axis=1)))  # noqa: E731
    # 500 HU (level 0.67) at the patient's left-anterior; body (0 HU, level 0.33) at the mirror positions
    assert grey(*LEFT_MARK) == pytest.approx(170, abs=12)
    assert grey(-LEFT_MARK[0], LEFT_MARK[1]) == pytest.approx(85, abs=12)
    assert grey(LEFT_MARK[0], -LEFT_MARK[1]) == pytest.approx(85, abs=12)
    # and the picture puts that block on the viewer's right, in the upper half (radiological, A at the top)
    r, c = pixel(ax, *LEFT_MARK)
    r0, r1, c0, c1 = axes_box(ax)
    assert c > (c0 + c1) / 2 and r < (r0 + r1) / 2
    labels = label_texts(ax)
    assert set(labels) == {"R", "L", "A", "P"}
    assert labels["R"][0] < 0.5 < labels["L"][0] and labels["A"][1] > 0.5 > labels["P"][1]


@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFP", "OBLIQUE"])
@pytest.mark.parametrize("plane", ["sagittal", "coronal"])
def test_head_is_at_the_top_for_head_first_and_feet_first(orientation, plane):
    ct = ct_for(orientation)
    ax = rplot.show_slice(ct, z=0.0, plane=plane, window=(250, 1500), structures=[marker_structure()],
                          linewidth=2.5, legend=False, ax=new_ax())
    rgb = render(ax)
    r0, r1, c0, c1 = axes_box(ax)
    inside = rgb[r0:r1, c0:c1]
    rows = np.nonzero(is_magenta(inside))[0]
    assert rows.size > 20, "the marker ROI outline is not drawn"
    assert rows.max() < (r1 - r0) / 2, "the superior marker ROI is not in the upper half"
    # the superior bone block (white) is in the upper half too, the body below it is not white
    bright = np.nonzero(inside.mean(axis=2) > 240)[0]
    assert bright.size > 50 and np.median(bright) < (r1 - r0) / 2
    grey = lambda x, y: float(patch(rgb, pixel(ax, x, y), 1).mean())  # noqa: E731
    assert grey(0.0, 22.0) > 240 and grey(0.0, -22.0) == pytest.approx(85, abs=12)
    labels = label_texts(ax)
    assert labels["S"][1] > 0.5 > labels["I"][1]
    side = {"sagittal": ("A", "P"), "coronal": ("R", "L")}[plane]
    assert labels[side[0]][0] < 0.5 < labels[side[1]][0]


def test_physical_aspect_with_non_square_pixels():
    ct = ct_for("HFS", shape=(24, 20, 60), pixel_spacing=(6.0, 2.0))  # 120 mm x 120 mm in 20 x 60 pixels
    ax = rplot.show_slice(ct, structures=False, ax=new_ax())
    render(ax)
    x0, y0 = ax.transData.transform((-40.0, -40.0))
    x1, y1 = ax.transData.transform((40.0, 40.0))
    assert abs(x1 - x0) == pytest.approx(abs(y1 - y0), rel=1e-6)
    image = ax.get_images()[0]
    assert image.get_array().shape == (20, 60)
    assert tuple(image.get_extent()) == pytest.approx((-60.0, 60.0, 60.0, -60.0))


def test_orientation_letters():
    assert rplot.orientation_letters([1, 0, 0]) == "L"
    assert rplot.orientation_letters([0, -1, 0]) == "A"
    assert rplot.orientation_letters([0, 0, 1]) == "S"
    assert rplot.orientation_letters([-0.8, 0.0, 0.6]) == "RS"
    with pytest.raises(rtkit.GeometryError):
        rplot.orientation_letters([0, 0, 0])


# ------------------------------------------------------------------ contours
@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFP"])
def test_contour_colour_at_the_roi_position_axial(orientation):
    ct = ct_for(orientation)
    roi = marker_structure()
    ax = rplot.show_slice(ct, z=22.5, structures=[roi], linewidth=2.5, legend=False, ax=new_ax())
    rgb = render(ax)
    for x, y in [(8.0, 0.0), (-8.0, 0.0), (0.0, 8.0), (0.0, -8.0), (8.0, 8.0)]:  # the square's edges (mm)
        assert is_magenta(patch(rgb, pixel(ax, x, y))).any(), (x, y)
    for x, y in [(0.0, 0.0), (15.0, 0.0), (0.0, -15.0)]:  # inside and outside, away from the edge
        assert not is_magenta(patch(rgb, pixel(ax, x, y))).any(), (x, y)


def test_contour_outside_its_slabs_is_not_drawn_and_slab_edges_are_respected():
    ct = ct_for("HFS")
    roi = marker_structure()  # planes 20..27.5 mm, slabs 18.75 .. 28.75 mm
    for z, drawn in [(-10.0, False), (18.0, False), (19.0, True), (28.5, True), (29.0, False)]:
        ax = rplot.show_slice(ct, z=z, structures=[roi], legend=True, ax=new_ax())
        assert bool(is_magenta(render(ax)).any()) == drawn, z
        assert (ax.get_legend() is not None) == drawn
        plt.close(ax.figure)


def test_contour_colour_on_a_sagittal_view():
    ct = ct_for("FFS")
    ax = rplot.show_slice(ct, z=0.0, plane="sagittal", structures=[marker_structure()], linewidth=2.5,
                          legend=False, ax=new_ax())
    rgb = render(ax)
    # the slab solid in the sagittal plane: y in [-8, 8], z in [18.75, 28.75]
    for y, z in [(8.0, 23.75), (-8.0, 23.75), (5.0, 28.75), (-5.0, 18.75)]:  # (clear of the "S" label)
        assert is_magenta(patch(rgb, pixel(ax, y, z))).any(), (y, z)
    assert not is_magenta(patch(rgb, pixel(ax, 0.0, 23.75))).any()
    assert not is_magenta(patch(rgb, pixel(ax, 0.0, 10.0))).any()


def test_case_structures_by_name_and_default(synthetic):
    case = rtkit.load(synthetic)
    ax = rplot.show_slice(case, z=0.0, structures=["PTV"], ax=new_ax())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PTV"]
    ptv = case.structures["PTV"]
    rgb = render(ax)
    want = np.array(ptv.color)
    # the PTV is a 20 mm sphere at the origin: its outline crosses (20, 0) and (0, -20) on z = 0
    for x, y in [(20.0, 0.0), (0.0, -20.0), (-20.0, 0.0)]:
        px = patch(rgb, pixel(ax, x, y), 3)
        assert (np.abs(px - want).max(axis=1) < 40).any(), (x, y)
    ax = rplot.show_slice(case, z=0.0, ax=new_ax())
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == [n for n in case.structures.names]
    with pytest.raises(rtkit.RTKitError, match="no Case"):
        rplot.show_slice(case.ct, structures=["PTV"], ax=new_ax())
    curve = rtkit.DVH([0.0, 30.0, 60.0], [10.0, 10.0, 0.0], name="PTV")
    ax = rplot.dvh({"PTV": curve}, structures=case, ax=new_ax())  # ROI colours looked up in the case
    assert matplotlib.colors.to_rgb(ax.get_lines()[0].get_color()) == pytest.approx(tuple(want / 255))


# ------------------------------------------------------------------ dose
def dose_box(value=lambda xyz: np.full(xyz.shape[:-1], 40.0)):
    g = rtkit.Grid.from_spacing((9, 13, 17), (2.5, 2.5, 2.5), origin=(-20.0, -15.0, -10.0),
                                frame_of_reference_uid="1.2.3.ct")
    return rtkit.Dose(value(g.centers()).astype(np.float32), g)  # voxel box x, y, z: +-21.25, +-16.25, +-11.25


@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFDL"])
def test_dose_colourwash_only_inside_the_dose_grid(orientation):
    ct = ct_for(orientation)
    ax = rplot.show_slice(ct, z=0.0, structures=False, dose=dose_box(), dose_alpha=0.8, colorbar=False,
                          labels=False, ax=new_ax())
    rgb = render(ax)
    for x, y in [(0.0, 0.0), (18.5, 0.0), (-18.5, 13.5), (0.0, -13.5)]:
        assert saturation(patch(rgb, pixel(ax, x, y), 1)).min() > 60, (x, y)
    for x, y in [(24.0, 0.0), (-24.0, 0.0), (0.0, 19.0), (0.0, -19.0), (35.0, 25.0)]:
        assert saturation(patch(rgb, pixel(ax, x, y), 1)).max() < 3, (x, y)
    # a slice outside the dose grid along z: no colour anywhere in the Axes
    ax = rplot.show_slice(ct, z=20.0, structures=False, dose=dose_box(), dose_alpha=0.8, colorbar=False,
                          labels=False, ax=new_ax())
    r0, r1, c0, c1 = axes_box(ax)
    assert saturation(render(ax)[r0:r1, c0:c1]).max() < 3


def test_isodose_lines_at_the_right_place():
    dose = dose_box(lambda p: 50.0 - np.abs(p[..., 0]))  # 40 Gy at x = +-10 mm
    ax = rplot.show_slice(ct_for("HFS"), z=0.0, structures=False, dose=dose, isodoses=[40.0], dose_alpha=0.0,
                          ax=new_ax())
    cs = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(cs) == 1 and list(cs[0].levels) == [40.0]
    xs = np.concatenate([p.vertices[:, 0] for p in cs[0].get_paths() if len(p.vertices)])
    assert np.abs(np.abs(xs) - 10.0).max() < 0.6
    assert not ax.get_images()[1:]  # alpha 0: no colourwash image


def test_dose_true_needs_a_case_and_positions_are_checked():
    ct = ct_for("HFS")
    with pytest.raises(rtkit.RTKitError, match="Case"):
        rplot.show_slice(ct, dose=True, ax=new_ax())
    with pytest.raises(rtkit.GeometryError, match="outside the image"):
        rplot.show_slice(ct, z=100.0, ax=new_ax())
    with pytest.raises(ValueError, match="plane"):
        rplot.show_slice(ct, plane="oblique", ax=new_ax())
    with pytest.raises(ValueError, match="window"):
        rplot.show_slice(ct, window="liver", ax=new_ax())
    other = dose_box()
    other.grid.frame_of_reference_uid = "7.7.7"
    with pytest.raises(rtkit.FrameOfReferenceError):
        rplot.show_slice(ct, dose=other, ax=new_ax())
    roi = marker_structure()
    roi.frame_of_reference_uid = "7.7.7"
    with pytest.raises(rtkit.FrameOfReferenceError):
        rplot.show_slice(ct, structures=[roi], ax=new_ax())


def test_show_slice_creates_a_figure_and_uses_position_alias():
    ax = rplot.show_slice(ct_for("HFS"), position=-5.0, plane="axial", structures=False)
    assert ax.figure is not None and "z = -5.0 mm" in ax.get_title()
    ax = rplot.show_slice(ct_for("HFS"), z=-5.0, plane="coronal", structures=False)
    assert "y = -5.0 mm" in ax.get_title()


# ------------------------------------------------------------------ DVH
def test_dvh_plot_colours_metrics_and_legend():
    doses = np.linspace(0, 70, 141)
    ptv = rtkit.DVH(doses, 30.0 / (1 + np.exp((doses - 60) / 1.5)), name="PTV")
    lung = rtkit.DVH(doses, 900.0 * np.exp(-doses / 8.0), name="Lung")
    rois = {"PTV": marker_structure(color=(255, 0, 0), name="PTV"), "Lung": marker_structure(color=(0, 0, 255))}
    ax = rplot.dvh(rtkit.DVHSet({"PTV": ptv, "Lung": lung}), metrics=["D95%", "V20Gy"], structures=rois,
                   ax=new_ax())
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_gid()}
    assert matplotlib.colors.to_rgb(lines["PTV"].get_color()) == (1.0, 0.0, 0.0)
    assert matplotlib.colors.to_rgb(lines["Lung"].get_color()) == (0.0, 0.0, 1.0)
    marks = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
    x, y = marks["metric:PTV:D95%"].get_data()
    assert x[0] == pytest.approx(ptv.dose_at(95)) and y[0] == pytest.approx(95.0)
    x, y = marks["metric:Lung:V20Gy"].get_data()
    assert x[0] == pytest.approx(20.0) and y[0] == pytest.approx(100 * np.exp(-20 / 8), rel=1e-2)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["PTV", "Lung", "D95%", "V20Gy"]
    rgb = render(ax)
    d50 = ptv.dose_at(50)
    assert (np.abs(patch(rgb, pixel(ax, d50, 50.0), 2) - [255, 0, 0]).max(axis=1) < 60).any()
    ax = rplot.dvh([ptv, lung], relative=False, ax=new_ax())
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(30.0 / (1 + np.exp(-40)))
    assert "cm" in ax.get_ylabel()
    with pytest.raises(rtkit.MetricError):
        rplot.dvh(ptv, metrics=["D95"], ax=new_ax())


# ------------------------------------------------------------------ fusion, checkerboard
def pet_for(orientation="FFS", frame="9.9.9.pet", hot=(10.0, 0.0, 0.0)):
    g = grid_for(orientation, shape=(20, 30, 30), pixel_spacing=(4.0, 4.0), step=3.0, frame=frame)
    r = np.linalg.norm(g.centers() - np.asarray(hot), axis=-1)
    return rtkit.Image((1.0 + 9.0 * (r < 8.0)).astype(np.float32), g, "PT", meta={"units": "BQML"})


def test_fusion_places_the_moving_image_through_the_registration():
    ct = ct_for("HFS")
    pet = pet_for(hot=(-40.0, 0.0, 0.0))
    m = np.eye(4)
    m[:3, 3] = (15.0, -10.0, 0.0)  # moving (PET) mm -> fixed (CT) mm: the hot spot lands at (-25, -10, 0)
    reg = rtkit.Registration(m)
    ax = rplot.fusion(ct, pet, reg, alpha=0.6, z=0.0, moving_window=(10, 20), threshold=2.0, colorbar=False,
                      ax=new_ax())
    rgb = render(ax)
    hot = patch(rgb, pixel(ax, -25.0, -10.0), 1)
    assert (hot[:, 0] - hot[:, 2]).min() > 80  # 'hot' colormap (orange at 10 of 0..20) over grey
    for x, y in [(25.0, -10.0), (-25.0, 10.0), (-40.0, 0.0), (-30.0, 25.0)]:
        assert saturation(patch(rgb, pixel(ax, x, y), 1)).max() < 3, (x, y)
    moving = ax.get_images()[1].get_array()
    assert moving.max() == pytest.approx(10.0)
    with pytest.raises(rtkit.FrameOfReferenceError):
        rplot.fusion(ct, pet, ax=new_ax())
    # same frame of reference, no registration; without a threshold the whole PET field of view is tinted
    ax = rplot.fusion(ct, pet_for(frame="1.2.3.ct", hot=(-25.0, -10.0, 0.0)), z=0.0, moving_window=(10, 20),
                      ax=new_ax())
    rgb = render(ax)
    assert (patch(rgb, pixel(ax, -25.0, -10.0), 1)[:, 0] - patch(rgb, pixel(ax, -25.0, -10.0), 1)[:, 2]).min() > 80
    assert saturation(patch(rgb, pixel(ax, 25.0, 10.0), 1)).min() > 5


def test_checkerboard_alternates_fixed_and_moving():
    ct = ct_for("HFS")
    flat = rtkit.Image(np.ones((20, 30, 30), np.float32), grid_for("FFS", shape=(20, 30, 30),
                       pixel_spacing=(5.0, 5.0), frame="1.2.3.ct"), "MR")
    ax = rplot.checkerboard(ct, flat, squares=4, window=(2000, 100), moving_window=(0.5, 1.0), z=0.0,
                            labels=False, ax=new_ax())
    board = np.asarray(ax.get_images()[0].get_array())
    rows, cols = board.shape
    assert board[rows // 8, cols // 8] == 0.0  # top-left square: the fixed CT (below its window: black)
    assert board[rows // 8, 3 * cols // 8] == 1.0  # the next one: the moving image (white)
    assert board[3 * rows // 8, cols // 8] == 1.0
    assert board[3 * rows // 8, 3 * cols // 8] == 0.0
    rgb = render(ax)
    r0, r1, c0, c1 = axes_box(ax)
    assert rgb[r0 + (r1 - r0) // 8, c0 + (c1 - c0) // 8].mean() < 10
    assert rgb[r0 + (r1 - r0) // 8, c0 + 3 * (c1 - c0) // 8].mean() > 245
    with pytest.raises(ValueError):
        rplot.checkerboard(ct, flat, squares=0, ax=new_ax())


# ------------------------------------------------------------------ MIP
@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFP"])
def test_mip_coronal_and_sagittal(orientation):
    pet = pet_for(orientation, frame=None, hot=(20.0, -10.0, 15.0))
    ax = rplot.mip(pet, "coronal", ax=new_ax())
    proj = np.asarray(ax.get_images()[0].get_array())
    assert proj.max() == pytest.approx(10.0, rel=0.05)
    rgb = render(ax)
    assert patch(rgb, pixel(ax, 20.0, 15.0), 1).mean() < 40  # gray_r: high uptake dark
    assert patch(rgb, pixel(ax, 20.0, -15.0), 1).mean() > 200  # the mirror below is background
    assert patch(rgb, pixel(ax, -20.0, 15.0), 1).mean() > 200  # and the patient's right
    labels = label_texts(ax)
    assert labels["S"][1] > 0.5 and labels["R"][0] < 0.5
    ax = rplot.mip(pet, "sagittal", ax=new_ax())
    rgb = render(ax)
    assert patch(rgb, pixel(ax, -10.0, 15.0), 1).mean() < 40
    assert patch(rgb, pixel(ax, 10.0, 15.0), 1).mean() > 200
    assert label_texts(ax)["A"][0] < 0.5


def test_mip_in_chunks_is_the_same(monkeypatch):
    pet = pet_for("OBLIQUE", frame=None, hot=(20.0, -10.0, 15.0))
    whole = np.asarray(rplot.mip(pet, "sagittal", ax=new_ax()).get_images()[0].get_array())
    monkeypatch.setattr(rplot, "_MIP_CHUNK_POINTS", 1)  # one plane at a time
    pieces = np.asarray(rplot.mip(pet, "sagittal", ax=new_ax()).get_images()[0].get_array())
    np.testing.assert_array_equal(whole, pieces)
    assert np.isnan(whole).any() and np.nanmax(whole) == pytest.approx(10.0, rel=0.05)  # oblique: corners empty


# ------------------------------------------------------------------ gamma
def test_gamma_plot_delegates():
    g = rtkit.Grid.from_spacing((3, 8, 10), (2.0, 2.0, 2.0))
    arr = np.full(g.shape, np.nan, np.float32)
    arr[1, 2:6, 2:8] = 0.5
    arr[1, 2:4, 2:4] = 1.5
    res = rtkit.GammaResult(arr, g, 3, 3, False, 10, 2, 60.0, 0.3)
    ax = rplot.gamma(res)
    assert "pass" in ax.get_title() and ax.get_images()
    assert np.nanmax(ax.get_images()[0].get_array()) == pytest.approx(1.5)
    ax = rplot.gamma(res, kind="histogram", ax=new_ax())
    assert "pass rate 83.33" in ax.get_title()


# ------------------------------------------------------------------ HTML summaries
def test_structure_set_html():
    a = marker_structure(name="PTV <high>", color=(255, 0, 255))
    b = Structure("Cord", 2, [], color=(0, 128, 255), type="OAR")
    html_text = StructureSet([a, b], label="Demo")._repr_html_()
    assert html_text.startswith("<div><b>rtkit StructureSet</b>") and html_text.endswith("</div>")
    assert "PTV &lt;high&gt;" in html_text and "<high>" not in html_text
    assert "rgb(255,0,255)" in html_text and "rgb(0,128,255)" in html_text
    assert f"{a.volume:.2f}" in html_text and "empty" in html_text and "OAR" in html_text
    assert html_text.count("<tr>") == 3


def test_dvhset_and_registration_html():
    doses = np.linspace(0, 70, 141)
    ptv = rtkit.DVH(doses, 30.0 / (1 + np.exp((doses - 60) / 1.5)), name="PTV")
    s = rtkit.DVHSet({"PTV": ptv})._repr_html_()
    assert s.startswith("<div><b>rtkit DVHSet</b>")
    for m in ("Dmin", "Dmean", "Dmax", "D95%"):
        assert f"<th>{m} (Gy)</th>" in s
    cells = re.findall(r"<td>([^<]*)</td>", s)
    assert cells[:2] == ["PTV", f"{ptv.volume_cc:.3f}"]
    assert f"{ptv.mean:.2f}" in cells and f"{ptv.dose_at(95):.2f}" in cells
    m = np.eye(4)
    m[:3, 3] = (1.5, -2.25, 3.0)
    reg = rtkit.Registration(m, metric=0.8125, metric_name="mi", method="rigid",
                             fixed=rtkit.registration.SeriesRef("1.2.840.1"),
                             moving=rtkit.registration.SeriesRef("1.2.840.2"))
    h = reg._repr_html_()
    assert h.startswith("<div><b>rtkit Registration</b>")
    assert "1.2.840.1" in h and "1.2.840.2" in h and "0.8125 (mi)" in h
    assert "1.500, -2.250, 3.000" in h and "<td>-2.25</td>" in h and "moving mm -&gt; fixed mm" in h


def test_case_and_plan_html_share_the_layout(synthetic):
    case = rtkit.load(synthetic)
    summaries = {"Case": case._repr_html_(), "RT Plan": case.plan._repr_html_(),
                 "StructureSet": case.structures._repr_html_()}
    for kind, text in summaries.items():
        assert text.startswith(f"<div><b>rtkit {kind}</b>") and text.endswith("</div>"), kind
        assert "<table>" in text
    assert "CT" in summaries["Case"] and "RTSTRUCT" in summaries["Case"]
    for beam in case.plan.beams:
        assert str(beam.name) in summaries["RT Plan"]
    for name in case.structures.names:
        assert f"<td>{name}</td>" in summaries["StructureSet"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return rtkit.datasets.synthetic_case(tmp_path_factory.mktemp("plot-case"))


def test_missing_matplotlib_names_the_plot_extra(monkeypatch):
    import sys

    ct = ct_for("HFS")
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import matplotlib.pyplot now fails
    for call in (lambda: rplot.show_slice(ct), lambda: rplot.mip(ct), lambda: rplot.dvh([]),
                 lambda: rplot.fusion(ct, ct), lambda: rplot.checkerboard(ct, ct)):
        with pytest.raises(rtkit.MissingDependencyError, match=r"rtkit\[plot\]"):
            call()


def test_plot_import_does_not_need_matplotlib():
    import subprocess
    import sys

    code = ("import sys, rtkit, rtkit.plot; assert 'matplotlib' not in sys.modules, 'matplotlib imported'; "
            "assert 'plot' in rtkit.__all__ and rtkit.plot.show_slice")
    subprocess.run([sys.executable, "-c", code], check=True)
