"""rtkit.register, Registration and DICOM Spatial Registration objects.

Synthetic cases are analytic: the phantom is a function of patient position,
so the moving image is the phantom evaluated at ``M x`` on its own grid (no
resampling of the fixed image), and the true moving -> fixed matrix ``M`` is
known by construction.  Real-data cases move the MIRP CT-frame images by a
known transform by giving their voxels a new affine (again no resampling).
"""

from __future__ import annotations

import copy
import glob
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dciodvfy import run_dciodvfy
from scipy.spatial.transform import Rotation
from scipy.special import expit

import rtkit
from rtkit import (
    DicomReadError,
    FrameOfReferenceError,
    Grid,
    Image,
    Registration,
    RegistrationError,
)
from rtkit.registration import SeriesRef

CENTRE = np.array([10.0, -20.0, 30.0])
HFS = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)  # (slice, row, column) -> (z, y, x)
FFS = np.array([[0, 0, -1], [0, 1, 0], [-1, 0, 0]], float)
PRONE = np.array([[0, 0, 1], [0, -1, 0], [-1, 0, 0]], float)
OBLIQUE = Rotation.from_euler("xyz", [20, 10, -15], degrees=True).as_matrix() @ HFS


def rigid(angles_deg, shift_mm, centre=CENTRE) -> np.ndarray:
    """Moving -> fixed: rotate about ``centre`` by x, y, z angles (degrees), then shift."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    m[:3, 3] = centre - m[:3, :3] @ centre + np.asarray(shift_mm, float)
    return m


def phantom(xyz: np.ndarray) -> np.ndarray:
    """A smooth analytic 'body' (mm, LPS): ellipsoids with soft edges and a low-frequency texture."""
    p = xyz - CENTRE

    def blob(c, r, width=1.5):
        d = np.sqrt((((p - np.asarray(c)) / np.asarray(r)) ** 2).sum(-1))
        return expit((1.0 - d) * np.min(r) / width)

    body = blob((0, 0, 0), (60, 45, 70))
    v = 100 * body
    v += 200 * blob((15, -5, 10), (14, 10, 18))
    v += -60 * blob((-22, 12, -18), (9, 15, 11))
    v += 400 * blob((0, 20, 0), (5, 5, 45))
    v += 150 * blob((-10, -25, 30), (12, 6, 8))
    v += 25 * body * np.sin(p[..., 0] / 9.0) * np.cos(p[..., 1] / 7.0) * np.sin(p[..., 2] / 11.0 + 0.3)
    return v


def grid(direction, shape, spacing, frame="1.2.826.0.1.3680043.8.498.1", centre=CENTRE) -> Grid:
    d = np.asarray(direction, float)
    sp = np.asarray(spacing, float)
    origin = centre - (d * sp) @ ((np.asarray(shape) - 1) / 2.0)
    return Grid.from_spacing(shape, sp, origin, d, frame)


def image_of(g: Grid, transform: np.ndarray | None = None, contrast=None, modality="CT") -> Image:
    """The phantom on grid ``g``; with ``transform`` (moving -> fixed) the grid is the moving one."""
    pts = g.centers().reshape(-1, 3)
    if transform is not None:
        pts = pts @ transform[:3, :3].T + transform[:3, 3]
    v = phantom(pts).reshape(g.shape)
    if contrast is not None:
        v = contrast(v)
    return Image(v.astype(np.float32), g, modality)


def body_points(n=400, seed=0) -> np.ndarray:
    """Points inside the phantom body (fixed frame)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, (4 * n, 3))
    u = u[(u**2).sum(1) < 1][:n]
    return CENTRE + u * np.array([55.0, 40.0, 65.0])


def tre(reg: Registration, truth: np.ndarray, pts: np.ndarray | None = None) -> float:
    """Mean target registration error (mm) over body points."""
    pts = body_points() if pts is None else pts
    moving_pts = pts @ np.linalg.inv(truth)[:3, :3].T + np.linalg.inv(truth)[:3, 3]
    return float(np.linalg.norm(reg.transform_points(moving_pts) - pts, axis=1).mean())


def MR_CONTRAST(v):  # noqa: N802 - a constant-like function: non-linear, non-monotonic
    return 500.0 - 0.8 * v + 0.002 * v**2


@pytest.fixture(scope="module")
def fixed_ct() -> Image:
    return image_of(grid(HFS, (44, 64, 72), (3.0, 2.0, 2.0)))


# ----------------------------------------------------------------- register, synthetic
@pytest.mark.parametrize(
    ("direction", "spacing", "angles", "shift"),
    [
        (HFS, (3.0, 1.8, 2.2), (10, -8, 6), (12, -20, 8)),  # non-square pixels
        (FFS, (2.5, 2.0, 2.0), (-6, 10, -10), (-20, 5, 15)),
        (PRONE, (3.0, 2.0, 2.0), (8, 6, -9), (5, 18, -12)),
        (OBLIQUE, (2.5, 2.1, 2.1), (-10, -5, 8), (15, 10, 20)),
    ],
    ids=["HFS-nonsquare", "FFS", "prone", "oblique"],
)
def test_rigid_multimodal_recovery(fixed_ct, direction, spacing, angles, shift) -> None:
    truth = rigid(angles, shift)
    moving = image_of(grid(direction, (40, 60, 64), spacing, frame="1.2.826.0.1.3680043.8.498.2"),
                      truth, MR_CONTRAST, "MR")
    reg = rtkit.register(fixed_ct, moving)  # different frames: starts from the geometric centres
    assert tre(reg, truth) <= 0.5
    assert reg.is_rigid
    assert reg.metric_name == "mi" and reg.metric > reg.history[0]["metric_start"]


@pytest.mark.parametrize("metric", ["ncc", "mse"])
def test_same_modality_metrics(fixed_ct, metric) -> None:
    truth = rigid((5, -7, 4), (-10, 6, 12))
    moving = image_of(grid(HFS, (40, 60, 64), (2.5, 2.0, 2.0), frame="2.25.7"), truth)
    reg = rtkit.register(fixed_ct, moving, metric=metric)
    assert tre(reg, truth) <= 0.5


def test_pet_like_coarse_blurred(fixed_ct) -> None:
    """A PET-like moving image: 4.7 mm voxels, smooth uptake, in the CT frame but moved."""
    truth = rigid((4, 6, -5), (8, -6, 10))
    g = grid(HFS, (28, 26, 28), (4.7, 4.7, 4.7), frame=fixed_ct.grid.frame_of_reference_uid)
    pet = image_of(g, truth, lambda v: np.clip(v, 0, None) ** 1.3, "PT")
    reg = rtkit.register(fixed_ct, pet, initial="centers")
    assert tre(reg, truth) <= 1.5


def test_capture_range(fixed_ct) -> None:
    truth = rigid((15, -15, 15), (30, -30, 30))
    moving = image_of(grid(HFS, (44, 64, 72), (3.0, 2.0, 2.0), frame="2.25.8"), truth, MR_CONTRAST, "MR")
    reg = rtkit.register(fixed_ct, moving, initial="identity")
    assert tre(reg, truth) <= 0.5


def test_affine_scaling(fixed_ct) -> None:
    truth = rigid((3, -2, 4), (5, -4, 6))
    truth[:3, :3] *= 1.05  # the moving image is 5% smaller than the fixed one
    truth[:3, 3] = CENTRE - truth[:3, :3] @ CENTRE + np.array([5, -4, 6])
    moving = image_of(grid(HFS, (40, 60, 64), (2.5, 2.0, 2.0), frame="2.25.9"), truth, MR_CONTRAST, "MR")
    reg = rtkit.register(fixed_ct, moving, method="affine")
    assert tre(reg, truth) <= 0.5
    assert np.linalg.det(reg.matrix[:3, :3]) ** (1 / 3) == pytest.approx(1.05, abs=0.005)
    rigid_only = rtkit.register(fixed_ct, moving, method="rigid")
    assert tre(rigid_only, truth) > tre(reg, truth)


def test_deterministic_and_progress(fixed_ct) -> None:
    truth = rigid((3, 2, -4), (4, 5, -6))
    moving = image_of(grid(HFS, (30, 40, 44), (3.0, 2.5, 2.5), frame="2.25.10"), truth, MR_CONTRAST, "MR")
    calls = []
    a = rtkit.register(fixed_ct, moving, seed=3, progress=calls.append, samples=8000)
    b = rtkit.register(fixed_ct, moving, seed=3, samples=8000)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert calls and {"level", "iteration", "metric"} <= set(calls[0])
    c = rtkit.register(fixed_ct, moving, seed=4, samples=8000)
    assert not np.array_equal(a.matrix, c.matrix)  # another random subset


def test_initial_from_registration_and_masks(fixed_ct) -> None:
    truth = rigid((6, -4, 5), (-8, 10, 4))
    moving = image_of(grid(HFS, (40, 60, 64), (2.5, 2.0, 2.0), frame="2.25.11"), truth, MR_CONTRAST, "MR")
    start = Registration(truth @ rigid((2, -2, 1), (3, -2, 2)))
    mask = np.linalg.norm(fixed_ct.grid.centers() - CENTRE, axis=-1) < 60
    reg = rtkit.register(fixed_ct, moving, initial=start, fixed_mask=mask, levels=(2, 1), smoothing_mm=(1, 0))
    assert tre(reg, truth) <= 0.5


def test_same_frame_starts_from_identity(fixed_ct) -> None:
    moving = image_of(grid(HFS, (40, 60, 64), (2.5, 2.0, 2.0), frame=fixed_ct.grid.frame_of_reference_uid),
                      None, MR_CONTRAST, "MR")
    reg = rtkit.register(fixed_ct, moving, levels=(2, 1), smoothing_mm=(1, 0))
    assert tre(reg, np.eye(4)) <= 0.3


def test_failures_raise(fixed_ct) -> None:
    far = grid(HFS, (20, 20, 20), (2.0, 2.0, 2.0), frame="2.25.12", centre=CENTRE + 5000)
    moving = image_of(far, rigid((0, 0, 0), (-5000, -5000, -5000)))  # content, but 8.7 m away
    with pytest.raises(RegistrationError, match="overlap"):
        rtkit.register(fixed_ct, moving, initial="identity")
    with pytest.raises(ValueError, match="method"):
        rtkit.register(fixed_ct, moving, method="bspline")
    with pytest.raises(ValueError, match="metric"):
        rtkit.register(fixed_ct, moving, metric="cc")
    with pytest.raises(ValueError, match="initial"):
        rtkit.register(fixed_ct, moving, initial="nearest")
    with pytest.raises(rtkit.GeometryError, match="fixed_mask"):
        rtkit.register(fixed_ct, moving, fixed_mask=np.ones((2, 2, 2), bool))
    flat = Image(np.zeros((40, 40, 40), np.float32), Grid.from_spacing((40, 40, 40), (4, 4, 4), CENTRE - 80, HFS,
                                                                       "2.25.13"))
    with pytest.raises(RegistrationError, match="constant"):
        rtkit.register(fixed_ct, flat, metric="ncc", initial="centers")


def test_divergence_raises_with_history(fixed_ct, monkeypatch) -> None:
    """An optimiser result worse than the start is an error carrying the metric history, never returned."""
    import types

    import rtkit.registration as registration

    moving = image_of(grid(HFS, (30, 40, 44), (3.0, 2.5, 2.5), frame="2.25.14"), rigid((2, 0, 0), (3, 0, 0)))

    def runaway(fun, x0, **kwargs):
        return types.SimpleNamespace(x=x0 + 40.0, nit=1, message="test: ran away")

    monkeypatch.setattr(registration.optimize, "minimize", runaway)
    with pytest.raises(RegistrationError, match="history") as info:
        rtkit.register(fixed_ct, moving, metric="ncc")
    assert "ran away" in str(info.value)


# ----------------------------------------------------------------- Registration object
def test_registration_points_inverse_resample(fixed_ct) -> None:
    truth = rigid((5, -3, 7), (4, -8, 2))
    mg = grid(HFS, (40, 60, 64), (2.5, 2.0, 2.0), frame="2.25.20")
    moving = image_of(mg, truth, modality="MR")
    reg = Registration(truth, fixed=SeriesRef.of(fixed_ct), moving=SeriesRef.of(moving), fixed_grid=fixed_ct.grid)
    pts = np.random.default_rng(1).normal(0, 30, (50, 3))
    np.testing.assert_allclose(reg.transform_points(pts), pts @ truth[:3, :3].T + truth[:3, 3])
    np.testing.assert_allclose(reg.inverse().transform_points(reg.transform_points(pts)), pts, atol=1e-9)
    assert reg.inverse().fixed.frame_of_reference_uid == "2.25.20"
    with pytest.raises(ValueError):
        reg.matrix[0, 0] = 2.0
    out = reg.resample(moving)
    assert out.grid == fixed_ct.grid and out.grid.frame_of_reference_uid == fixed_ct.grid.frame_of_reference_uid
    inside = np.abs(out.array - fixed_ct.array) < 1e9
    # where the moving grid covers the fixed voxels, the resampled phantom matches the fixed one
    covered = mg.contains(reg.inverse().transform_points(fixed_ct.grid.centers().reshape(-1, 3)), 0)
    covered = covered.reshape(fixed_ct.shape) & inside
    err = np.abs(out.array - fixed_ct.array)[covered]
    assert covered.sum() > 0.5 * covered.size and np.median(err) < 2.0
    other = image_of(grid(HFS, (5, 5, 5), (2, 2, 2), frame="2.25.99"))
    with pytest.raises(FrameOfReferenceError):
        reg.resample(other)
    with pytest.raises(rtkit.GeometryError, match="grid"):
        reg.inverse().resample(fixed_ct)
    with pytest.raises(rtkit.GeometryError):
        Registration(np.zeros((4, 4)))
    assert "rotation" in repr(reg)
    assert reg.rotation_deg == pytest.approx(
        np.degrees(Rotation.from_matrix(truth[:3, :3]).magnitude()), abs=1e-6)


def test_structures_mapped_to_fixed_frame() -> None:
    truth = rigid((0, 0, 90), (10, 0, 0), centre=np.zeros(3))
    square = np.array([[0, 0], [10, 0], [10, 4], [0, 4]], float)
    contours = [rtkit.Contour(np.c_[square, np.full(4, z)]) for z in (-2.0, 0.0, 2.0)]
    ss = rtkit.StructureSet([rtkit.Structure("box", 1, contours, frame_of_reference_uid="2.25.30")],
                            frame_of_reference_uid="2.25.30")
    reg = Registration(truth, fixed=SeriesRef("2.25.31"), moving=SeriesRef("2.25.30"))
    mapped = reg.transform_structures(ss)
    assert mapped.frame_of_reference_uid == "2.25.31"
    assert mapped["box"].volume == pytest.approx(ss["box"].volume)
    p = mapped["box"].contours[0].points
    np.testing.assert_allclose(p[1], truth[:3, :3] @ [10, 0, -2.0] + truth[:3, 3], atol=1e-9)


# ----------------------------------------------------------------- DICOM REG
def _ct_with_headers(tmp_series, frame: str, modality="CT", study=None):
    truth = tmp_series(subfolder=modality.lower(), modality=modality, frame_of_reference_uid=frame,
                       study_uid=study, rescale=(1, -1024) if modality == "CT" else None)
    return rtkit.read_image(truth.folder)


def test_reg_round_trip_and_dciodvfy(tmp_series, tmp_path: Path) -> None:
    ct = _ct_with_headers(tmp_series, "1.2.826.0.1.3680043.8.498.100")
    mr = _ct_with_headers(tmp_series, "1.2.826.0.1.3680043.8.498.200", modality="MR")
    truth = rigid((12.3456789, -7.654321, 3.3), (-123.456789, 654.3210987, -0.000123))
    reg = Registration(truth, fixed=SeriesRef.of(ct), moving=SeriesRef.of(mr), fixed_grid=ct.grid,
                       meta=dict(ct.meta), method="rigid")
    path = reg.save(tmp_path / "reg.dcm")
    back = rtkit.read_registration(path)
    np.testing.assert_allclose(back.matrix, truth, atol=1e-6, rtol=0)
    assert back.fixed.frame_of_reference_uid == ct.grid.frame_of_reference_uid
    assert back.moving.frame_of_reference_uid == mr.grid.frame_of_reference_uid
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.1" and ds.Modality == "REG"
    assert ds.FrameOfReferenceUID == ct.grid.frame_of_reference_uid
    assert ds.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0] \
        .FrameOfReferenceTransformationMatrixType == "RIGID"
    referenced = {r.ReferencedSOPInstanceUID for r in ds.RegistrationSequence[1].ReferencedImageSequence}
    assert referenced == set(mr.meta["sop_instance_uids"])
    errors = [line for line in run_dciodvfy(path) if line.startswith("Error")]
    assert errors == []
    # affine: typed AFFINE, also valid
    aff = truth.copy()
    aff[:3, :3] *= [[1.02], [0.98], [1.01]]
    p2 = Registration(aff, fixed=SeriesRef.of(ct), moving=SeriesRef.of(mr), meta=dict(ct.meta)).save(
        tmp_path / "aff.dcm")
    np.testing.assert_allclose(rtkit.read_registration(p2).matrix, aff, atol=1e-6, rtol=0)
    assert [line for line in run_dciodvfy(p2) if line.startswith("Error")] == []
    with pytest.raises(rtkit.RTKitError, match="exists"):
        reg.save(path)


def test_reg_errors(data_dir: Path, tmp_path: Path) -> None:
    stub = data_dir / "misc-rt-objects" / "onkodicom-reg-stub"
    with pytest.raises(DicomReadError, match="FrameOfReferenceUID"):
        rtkit.read_registration(stub / "spatial_reg.dcm")
    with pytest.raises(DicomReadError, match="not Spatial Registration"):
        rtkit.read_registration(stub / "transform.dcm")
    with pytest.raises(FrameOfReferenceError, match="FrameOfReferenceUID"):
        Registration(np.eye(4)).save(tmp_path / "x.dcm")


def test_reg_with_three_frames_needs_a_choice(tmp_series, tmp_path: Path) -> None:
    ct = _ct_with_headers(tmp_series, "2.25.300")
    reg = Registration(rigid((1, 2, 3), (4, 5, 6)), fixed=SeriesRef("2.25.300"), moving=SeriesRef("2.25.301"),
                       meta=dict(ct.meta))
    path = reg.save(tmp_path / "r.dcm")
    ds = pydicom.dcmread(path)
    third = copy.deepcopy(ds.RegistrationSequence[1])
    third.FrameOfReferenceUID = "2.25.302"
    third.MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrix = \
        [str(v) for v in np.eye(4).reshape(-1)]
    ds.RegistrationSequence.append(third)
    ds.save_as(tmp_path / "three.dcm")
    with pytest.raises(DicomReadError, match="moving_frame_of_reference_uid"):
        rtkit.read_registration(tmp_path / "three.dcm")
    chosen = rtkit.read_registration(tmp_path / "three.dcm", fixed_frame_of_reference_uid="2.25.301",
                                     moving_frame_of_reference_uid="2.25.302")
    np.testing.assert_allclose(chosen.matrix, np.linalg.inv(reg.matrix), atol=1e-6)


def test_case_registrations_bring_images_to_ct(tmp_path: Path) -> None:
    from _cases import clone_case

    folder = clone_case(tmp_path / "case", patient_id="REGCASE")
    case = rtkit.load(folder)
    ct = case.ct
    # an MR of the same patient in its own frame: the CT's voxels moved by a known transform
    truth = rigid((4, -3, 5), (7, -9, 3), centre=ct.grid.index_to_world((np.array(ct.shape) - 1) / 2))
    mr_grid = Grid(ct.grid.shape, np.linalg.inv(truth) @ ct.grid.affine, "2.25.400")
    mr = Image(ct.array.astype(np.float32), mr_grid, "MR")
    assert case.registrations == []
    with pytest.raises(FrameOfReferenceError, match="register"):
        case.on_ct(mr)
    reg = Registration(truth, fixed=SeriesRef.of(ct), moving=SeriesRef("2.25.400"), meta=dict(ct.meta))
    reg.save(folder / "REG.dcm")
    case = rtkit.load(folder)
    assert len(case.registrations) == 1
    on_ct = case.on_ct(mr)
    assert on_ct.grid == case.ct.grid
    np.testing.assert_allclose(on_ct.array, case.ct.array, atol=1e-3)
    np.testing.assert_allclose(case.on_ct(case.ct).array, case.ct.array)


# ----------------------------------------------------------------- real data (MIRP sarcoma)
def _mirp(data_dir: Path, what: str) -> Image:
    return rtkit.read_image(data_dir / "mirp-sts-ct-pet-mr" / "cropped" / "STS_001" / what / "dicom" / "image")


def _moved(image: Image, truth: np.ndarray, frame: str) -> Image:
    """The same voxels placed so that moving -> fixed is ``truth`` (no resampling)."""
    return Image(image.array, Grid(image.grid.shape, np.linalg.inv(truth) @ image.grid.affine, frame),
                 image.modality)


@pytest.fixture(scope="module")
def mirp_ct(data_dir: Path) -> Image:
    ct = _mirp(data_dir, "CT")
    ct.array  # noqa: B018 - load once
    return ct


def _gtv_points(data_dir: Path) -> np.ndarray:
    f = glob.glob(str(data_dir / "mirp-sts-ct-pet-mr" / "cropped" / "STS_001" / "CT" / "dicom" / "mask" / "*.dcm"))
    ss = rtkit.read_structures(f[0])
    pts = np.concatenate([c.points for s in ss.values() for c in s.contours])
    return pts[:: max(1, len(pts) // 300)]


@pytest.mark.parametrize(
    ("what", "angles", "shift", "limit"),
    [("CT", (10, -10, 10), (20, -20, 20), 0.5), ("MR_T1", (-8, 6, -10), (-15, 12, 18), 0.5),
     ("PET", (6, -8, 5), (12, -10, 15), 1.5)],
)
def test_mirp_images_moved_by_known_transform(data_dir, mirp_ct, what, angles, shift, limit) -> None:
    """Each MIRP image registered back onto itself moved by up to 10 deg / 20 mm (MI, own frame)."""
    image = mirp_ct if what == "CT" else _mirp(data_dir, what)
    centre = image.grid.index_to_world((np.array(image.shape) - 1) / 2.0)
    truth = rigid(angles, shift, centre=centre)
    reg = rtkit.register(image, _moved(image, truth, "2.25.500"))
    body = mirp_ct.grid.centers()[mirp_ct.array > -300][::97]
    assert tre(reg, truth, body) <= limit
    assert tre(reg, truth, _gtv_points(data_dir)) <= limit


def test_dciodvfy_on_registered_real_pair(data_dir, mirp_ct, tmp_path: Path) -> None:
    """A REG for the raw MR (own frame) onto the CT references both series and validates."""
    mr = rtkit.read_image(data_dir / "mirp-sts-ct-pet-mr" / "raw" / "STS_001" / "MR_T1" / "image")
    reg = Registration(rigid((1, 2, 3), (0, 0, -770)), fixed=SeriesRef.of(mirp_ct), moving=SeriesRef.of(mr),
                       meta=dict(mirp_ct.meta))
    with pytest.warns(rtkit.RTKitWarning):  # the CT's StudyID is longer than its VR allows
        path = reg.save(tmp_path / "mr_to_ct.dcm")
    assert [line for line in run_dciodvfy(path) if line.startswith("Error")] == []
    back = rtkit.read_registration(path)
    np.testing.assert_allclose(back.matrix, reg.matrix, atol=1e-6)
