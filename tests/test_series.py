"""Image series assembly: the geometry corpus, rescaling, compressed data and bad inputs.

Every expected value comes from what :mod:`builders` wrote (header strings
parsed back, stored pixels) and the DICOM image-plane formula implemented in
``builders.SliceTruth.world``; nothing is copied from rtkit output.  Every
reading test checks that the input files are byte-identical afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from builders import (
    ORIENTATIONS,
    SeriesTruth,
    file_hashes,
    pixel_data_offset,
    truncate,
    unchanged,
    write_image_series,
    write_multiframe_enhanced_ct,
    write_non_dicom,
    write_unsupported_syntax_file,
)
from pydicom.uid import JPEG2000Lossless

import rtkit

ATOL_MM = 1e-6
READERS = ["read_image", "scan+load"]


# --------------------------------------------------------------------------- helpers
def read(reader: str, folder: Path, truth: SeriesTruth | None = None, *, modality: str = "CT") -> rtkit.Image:
    """Read the one series in ``folder`` with ``rtkit.read_image`` or ``scan`` + ``load``.

    The pixel data are accessed before returning (lazy images load here).
    """
    if reader == "read_image":
        img = rtkit.read_image(folder)
    else:
        index = rtkit.scan(folder)
        if truth is not None:
            check_index(index, truth)
        case = rtkit.load(folder)
        if modality == "CT":
            img = case.ct
            assert img is not None, "rtkit.load(...).ct is None for a folder holding one CT series"
        else:
            assert case.ct is None
            assert len(case.images) == 1
            img = case.images[0]
    _ = img.array
    return img


def check_index(index: rtkit.Index, truth: SeriesTruth, extra_skipped: int = 0) -> None:
    """``scan`` found exactly the written series, with every file, by UID."""
    assert len(index.series) == 1, index.series
    s = index.series[0]
    assert s.series_instance_uid == truth.series_instance_uid
    assert s.modality == truth.modality
    assert {Path(p) for p in s.files} == set(truth.paths)
    assert s.sop_instance_uids == set(truth.sop_instance_uids)
    assert s.patient_id == truth.patient_id
    assert s.frame_of_reference_uid == truth.frame_of_reference_uid
    assert len(index.skipped) == extra_skipped
    assert index.unreadable == []


def voxel_indices(shape: tuple[int, int, int]) -> np.ndarray:
    return np.stack(np.indices(shape), axis=-1).astype(np.float64)


def match_slices(img: rtkit.Image, truth: SeriesTruth) -> np.ndarray:
    """Grid slice index of each written slice: the one whose voxel (k, 0, 0) is at its IPP."""
    n = len(truth.slices)
    assert img.grid.shape == (n, truth.rows, truth.columns)
    firsts = img.grid.index_to_world(np.c_[np.arange(n), np.zeros(n), np.zeros(n)])
    ipps = np.array([s.position for s in truth.slices])
    dist = np.linalg.norm(firsts[:, None, :] - ipps[None, :, :], axis=2)  # (grid k, written slice)
    k_of = dist.argmin(axis=0)
    worst = dist[k_of, np.arange(n)].max()
    assert worst < ATOL_MM, f"a written slice's IPP is {worst} mm from every grid slice"
    assert sorted(k_of.tolist()) == list(range(n)), "written slices do not map one-to-one onto grid slices"
    return k_of


def expected_volume(img: rtkit.Image, truth: SeriesTruth) -> tuple[np.ndarray, np.ndarray]:
    """(world positions (n, rows, cols, 3), rescaled values (n, rows, cols)) in rtkit's slice order."""
    k_of = match_slices(img, truth)
    n = len(truth.slices)
    world = np.empty((n, truth.rows, truth.columns, 3))
    values = np.empty((n, truth.rows, truth.columns))
    for s, k in zip(truth.slices, k_of, strict=True):
        world[k] = s.world()
        values[k] = s.values
    return world, values


def assert_image_matches(img: rtkit.Image, truth: SeriesTruth, *, float32: bool = False) -> None:
    """Every voxel's value and DICOM-formula world position, within 1e-6 mm."""
    world, values = expected_volume(img, truth)
    shape = img.grid.shape
    np.testing.assert_allclose(img.grid.index_to_world(voxel_indices(shape)), world, rtol=0, atol=ATOL_MM)
    np.testing.assert_allclose(img.grid.centers(), world, rtol=0, atol=ATOL_MM)
    assert img.array.shape == shape
    if float32:
        assert img.array.dtype == np.float32
        np.testing.assert_array_equal(img.array, values.astype(np.float32))
    else:
        np.testing.assert_array_equal(img.array, values)
    assert img.grid.frame_of_reference_uid == truth.frame_of_reference_uid
    assert img.series_instance_uid == truth.series_instance_uid
    assert img.modality == truth.modality


def mentions(msg: str, *, paths=(), positions=()) -> bool:
    """Whether an error message names one of ``paths`` or one of the numbers ``positions``."""
    for p in paths:
        if Path(p).name in msg:
            return True
    for v in positions:
        for fmt in ("{:.1f}", "{:.2f}", "{:.3f}", "{:g}"):
            if fmt.format(v) in msg:
                return True
    return False


def along_normal(truth: SeriesTruth) -> np.ndarray:
    """Position of each written slice along its normal (mm), in stack order k."""
    s0 = truth.slices[0]
    return truth.positions @ s0.normal


# --------------------------------------------------------------------------- the geometry corpus
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("step", [2.5, -2.5], ids=["step+", "step-"])
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_orientation_corpus(tmp_path, orientation, step, reader):
    truth = write_image_series(
        tmp_path / "ct",
        shape=(6, 10, 12),
        pixel_spacing=(0.8, 1.2),  # non-square pixels, rows != columns
        orientation=ORIENTATIONS[orientation],
        origin=(-100.25, -80.5, 40.0),
        slice_step=step,
        patient_position=orientation if orientation != "OBLIQUE" else "HFS",
        rng=2 * list(ORIENTATIONS).index(orientation) + (step > 0),
    )
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "ct", truth)
    assert_image_matches(img, truth)


def test_oblique_orientation_is_a_rotation():
    iop = np.array(ORIENTATIONS["OBLIQUE"])
    row, col = iop[:3], iop[3:]
    assert abs(np.linalg.norm(row) - 1) < 1e-12 and abs(np.linalg.norm(col) - 1) < 1e-12
    assert abs(row @ col) < 1e-12
    assert all(abs(v) > 0.01 for v in np.cross(row, col))  # normal not along an axis
    for name, o in ORIENTATIONS.items():
        o = np.asarray(o)
        assert abs(o[:3] @ o[3:]) < 1e-12, name


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFDR", "OBLIQUE"])
def test_single_slice_series(tmp_path, orientation, reader):
    truth = write_image_series(
        tmp_path / "ct",
        shape=(1, 9, 7),
        pixel_spacing=(0.8, 1.2),
        orientation=ORIENTATIONS[orientation],
        slice_thickness=3.0,
    )
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "ct", truth)
    assert_image_matches(img, truth)
    # the slice axis is the normal, as long as SliceThickness
    axis = img.grid.affine[:3, 0]
    assert np.linalg.norm(axis) == pytest.approx(3.0, abs=1e-9)
    assert abs(axis / 3.0 @ truth.slices[0].normal) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("reader", READERS)
def test_gantry_tilt_step_vector(tmp_path, reader):
    # slices step 2.5 mm along the normal and 0.4 mm along the column cosine (+y for HFS)
    truth = write_image_series(tmp_path / "ct", orientation=ORIENTATIONS["HFS"], slice_step=(0.0, 0.4, 2.5))
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "ct", truth)
    assert_image_matches(img, truth)


@pytest.mark.parametrize("reader", READERS)
def test_mr_oblique_without_rescale(tmp_path, reader):
    truth = write_image_series(
        tmp_path / "mr",
        modality="MR",
        orientation=ORIENTATIONS["OBLIQUE"],
        slice_step=-4.0,
        rescale=None,
        values=lambda k, r, c: 7 * k + 100 * r + 3 * c,
    )
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "mr", truth, modality="MR")
    assert_image_matches(img, truth)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("orientation", ["HFS", "OBLIQUE"])
def test_enhanced_multiframe_ct(tmp_path, orientation, reader):
    truth = write_multiframe_enhanced_ct(
        tmp_path / "ect",
        shape=(7, 10, 12),
        pixel_spacing=(0.8, 1.2),
        orientation=ORIENTATIONS[orientation],
        slice_step=-3.0,
        rescale=(1, -1024),
    )
    assert [s.k for s in truth.slices] != list(range(7))  # frames really are shuffled
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "ect", truth)
    assert_image_matches(img, truth)


# --------------------------------------------------------------------------- rescale
@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("rescale", [(1, -1024), (1, -1000), (1, 0), (2, -1024)])
def test_ct_values_are_hounsfield_units(tmp_path, rescale, reader):
    truth = write_image_series(
        tmp_path / "ct",
        rescale=rescale,
        values=lambda k, r, c: 1000 * k + 37 * r - 5 * c,  # includes negative stored values
    )
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "ct", truth)
    _, values = expected_volume(img, truth)
    # stored * slope + intercept, by hand
    stored = np.empty_like(values)
    for s, k in zip(truth.slices, match_slices(img, truth), strict=True):
        stored[k] = s.stored
    np.testing.assert_array_equal(img.array, stored * rescale[0] + rescale[1])
    assert_image_matches(img, truth)
    assert img.meta.get("units") == "HU"


@pytest.mark.parametrize("reader", READERS)
def test_per_slice_integer_intercepts(tmp_path, reader):
    intercepts = [-1024, -1000, -1024, -1023, 0, -2048]
    truth = write_image_series(tmp_path / "ct", per_slice_rescale=[(1, b) for b in intercepts])
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "ct", truth)
    assert_image_matches(img, truth)


@pytest.mark.parametrize("reader", READERS)
def test_pet_per_slice_float_rescale(tmp_path, reader):
    slopes = [0.123456, 1.5e-3, 2.75, 0.0714285714, 13.1, 0.5]
    intercepts = [0.0, 0.25, -1.5, 0.0, 3.125, 0.0]
    truth = write_image_series(
        tmp_path / "pt",
        modality="PT",
        per_slice_rescale=list(zip(slopes, intercepts, strict=True)),
        values=lambda k, r, c: 1000 * k + 97 * r + 11 * c,
        orientation=ORIENTATIONS["FFS"],
        slice_step=3.27,
    )
    with unchanged(tmp_path):
        img = read(reader, tmp_path / "pt", truth, modality="PT")
    assert_image_matches(img, truth, float32=True)
    # spot-check one voxel by hand: written slice k=1, pixel (2, 3): stored 1000 + 194 + 33 = 1227
    s1 = next(s for s in truth.slices if s.k == 1)
    k = int(match_slices(img, truth)[truth.slices.index(s1)])
    assert img.array[k, 2, 3] == np.float32(1227 * 1.5e-3 + 0.25)


# --------------------------------------------------------------------------- compressed
@pytest.mark.parametrize("reader", READERS)
def test_jpeg2000_lossless_matches_uncompressed(tmp_path, reader):
    common = dict(
        shape=(4, 32, 32),  # the JPEG 2000 encoder needs at least 32 x 32 pixels
        pixel_spacing=(0.9, 1.1),
        orientation=ORIENTATIONS["HFP"],
        slice_step=2.0,
        values=lambda k, r, c: (k * 911 + r * r * 7 - c * 13) % 3000 - 1000,
        rng=5,
    )
    raw = write_image_series(tmp_path / "raw", **common)
    j2k = write_image_series(tmp_path / "j2k", transfer_syntax=JPEG2000Lossless, **common)
    for p in j2k.paths:
        assert pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEG2000Lossless
    with unchanged(tmp_path):
        a = read(reader, tmp_path / "raw", raw)
        b = read(reader, tmp_path / "j2k", j2k)
    assert_image_matches(a, raw)
    assert_image_matches(b, j2k)
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_array_equal(a.grid.affine, b.grid.affine)


def test_unsupported_transfer_syntax_names_codecs(tmp_path):
    path = write_unsupported_syntax_file(tmp_path / "mpeg")
    with unchanged(tmp_path):
        with pytest.raises(rtkit.DicomReadError) as exc:
            rtkit.read_image(tmp_path / "mpeg")
    assert "codecs" in str(exc.value)
    assert mentions(str(exc.value), paths=[path])


def test_unsupported_transfer_syntax_through_load(tmp_path):
    path = write_unsupported_syntax_file(tmp_path / "mpeg")
    with unchanged(tmp_path):
        index = rtkit.scan(tmp_path / "mpeg")  # headers only: no decoding needed
        assert [len(s) for s in index.series] == [1]
        ct = rtkit.load(tmp_path / "mpeg").ct
        with pytest.raises(rtkit.DicomReadError) as exc:
            _ = ct.array
    assert "codecs" in str(exc.value)
    assert mentions(str(exc.value), paths=[path])


# --------------------------------------------------------------------------- non-uniform pitch
def _uneven_series(folder: Path, orientation: str) -> SeriesTruth:
    iop = np.asarray(ORIENTATIONS[orientation])
    normal = np.cross(iop[:3], iop[3:])
    offsets = np.cumsum([0.0, 3.19, 3.27, 3.29])  # 0, 3.19, 6.46, 9.75 mm
    origin = np.array([-50.5, 20.25, -30.0])
    return write_image_series(
        folder,
        shape=(4, 6, 8),
        orientation=ORIENTATIONS[orientation],
        positions=origin + offsets[:, None] * normal,
        values=lambda k, r, c: 400 * k * k + 10 * r + c,  # non-linear in k: interpolation shows
    )


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("orientation", ["HFS", "FFP", "OBLIQUE"])
def test_non_uniform_pitch_warns_and_resamples(tmp_path, orientation, reader):
    truth = _uneven_series(tmp_path / "ct", orientation)
    with unchanged(tmp_path):
        with pytest.warns(rtkit.RTKitWarning) as record:
            img = read(reader, tmp_path / "ct", truth)
    msgs = [str(w.message) for w in record if issubclass(w.category, rtkit.RTKitWarning)]
    assert any("pitch" in m or "uniform" in m for m in msgs), msgs

    # expected grid: uniform from the first to the last written slice, same count
    by_k = truth.by_k()
    first, last = by_k[0], by_k[-1]
    n = len(by_k)
    assert img.grid.shape == (n, truth.rows, truth.columns)
    order = 1 if np.linalg.norm(img.grid.origin - first.position) < ATOL_MM else -1
    if order == -1:
        first, last = last, first
    assert np.linalg.norm(img.grid.origin - first.position) < ATOL_MM
    step = (last.position - first.position) / (n - 1)
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    dr, dc = first.pixel_spacing
    idx = voxel_indices(img.grid.shape)
    world = (
        first.position
        + idx[..., 0:1] * step
        + idx[..., 1:2] * dr * col_cos
        + idx[..., 2:3] * dc * row_cos
    )
    np.testing.assert_allclose(img.grid.index_to_world(idx), world, rtol=0, atol=ATOL_MM)

    # expected values: linear interpolation along the normal between written slices
    d = along_normal(truth)  # increasing in k by construction
    vals = np.stack([s.values for s in by_k])
    targets = first.position @ first.normal + np.arange(n) * (step @ first.normal)
    expected = np.empty((n, truth.rows, truth.columns))
    for r in range(truth.rows):
        for c in range(truth.columns):
            expected[:, r, c] = np.interp(targets, d, vals[:, r, c])
    np.testing.assert_allclose(img.array, expected, rtol=1e-6, atol=1e-3)
    # the resampled inner slices really differ from the written ones
    assert not np.allclose(expected[1], vals[1])


@pytest.mark.parametrize("reader", READERS)
def test_non_uniform_pitch_strict_raises(tmp_path, monkeypatch, reader):
    truth = _uneven_series(tmp_path / "ct", "HFS")
    monkeypatch.setattr(rtkit.config, "strict", True)
    with unchanged(tmp_path):
        with pytest.raises(rtkit.GeometryError) as exc:
            read(reader, tmp_path / "ct", truth)
    assert mentions(str(exc.value), paths=truth.paths, positions=along_normal(truth))


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("reader", READERS)
def test_missing_slice(tmp_path, reader):
    truth = write_image_series(tmp_path / "ct", shape=(8, 6, 6), slice_step=2.5, skip_slices=(3,))
    with unchanged(tmp_path):
        with pytest.raises(rtkit.GeometryError) as exc:
            read(reader, tmp_path / "ct")
    msg = str(exc.value)
    assert "missing" in msg.lower()
    # z of the slices on each side of the gap: 40 + 2 * 2.5 and 40 + 4 * 2.5
    assert mentions(msg, positions=[45.0, 50.0]) or mentions(msg, paths=truth.paths), msg


@pytest.mark.parametrize(
    "n, skip",
    [(5, 2), (4, 1), (4, 2), (6, 3)],
    ids=["5-skip2", "4-skip1", "4-skip2", "6-skip3"],
)
def test_missing_slice_in_short_series(tmp_path, n, skip):
    # a step of exactly twice the pitch is a missing slice, however few slices remain
    truth = write_image_series(tmp_path / "ct", shape=(n, 6, 6), slice_step=2.5, skip_slices=(skip,))
    z_before, z_after = 40.0 + (skip - 1) * 2.5, 40.0 + (skip + 1) * 2.5
    with unchanged(tmp_path):
        with pytest.raises(rtkit.GeometryError) as exc:
            rtkit.read_image(tmp_path / "ct")
    msg = str(exc.value)
    assert "missing" in msg.lower(), msg
    assert mentions(msg, positions=[z_before, z_after]) or mentions(msg, paths=truth.paths), msg


@pytest.mark.parametrize("reader", READERS)
def test_duplicate_positions(tmp_path, reader):
    z = [40.0, 42.5, 45.0, 45.0, 47.5, 50.0]
    truth = write_image_series(tmp_path / "ct", positions=[(-100.0, -80.0, v) for v in z])
    dup_paths = [s.path for s in truth.slices if s.position[2] == 45.0]
    with unchanged(tmp_path):
        with pytest.raises(rtkit.GeometryError) as exc:
            read(reader, tmp_path / "ct")
    assert mentions(str(exc.value), paths=dup_paths, positions=[45.0]), str(exc.value)


def test_two_series_in_one_folder(tmp_path):
    a = write_image_series(tmp_path / "mixed", rng=1)
    b = write_image_series(tmp_path / "mixed", rng=2, patient_id=a.patient_id, study_uid=a.study_instance_uid,
                           frame_of_reference_uid=a.frame_of_reference_uid, series_number=2)
    with unchanged(tmp_path):
        with pytest.raises(rtkit.AmbiguousCaseError) as exc:
            rtkit.read_image(tmp_path / "mixed")
        assert isinstance(exc.value, LookupError)
        msg = str(exc.value)
        assert a.series_instance_uid in msg and b.series_instance_uid in msg
        # scan sees both; load refuses to guess which CT is the planning CT
        index = rtkit.scan(tmp_path / "mixed")
        assert {s.series_instance_uid for s in index.series} == {a.series_instance_uid, b.series_instance_uid}
        with pytest.raises(rtkit.AmbiguousCaseError):
            rtkit.load(tmp_path / "mixed")
        # each series alone, as a file list, is fine
        img = rtkit.read_image(a.paths)
    assert_image_matches(img, a)


@pytest.mark.parametrize("reader", READERS)
def test_mixed_image_sizes_in_one_series(tmp_path, reader):
    a = write_image_series(tmp_path / "ct", shape=(4, 10, 12), origin=(0, 0, 0), slice_step=2.5, rng=1)
    b = write_image_series(
        tmp_path / "ct",
        shape=(2, 8, 12),
        origin=(0, 0, 10.0),
        slice_step=2.5,
        rng=2,
        series_uid=a.series_instance_uid,
        study_uid=a.study_instance_uid,
        frame_of_reference_uid=a.frame_of_reference_uid,
    )
    with unchanged(tmp_path):
        with pytest.raises(rtkit.GeometryError) as exc:
            read(reader, tmp_path / "ct")
    assert mentions(str(exc.value), paths=a.paths + b.paths), str(exc.value)


@pytest.mark.parametrize("reader", READERS)
def test_missing_image_position(tmp_path, reader):
    truth = write_image_series(tmp_path / "ct", shape=(5, 6, 6))
    victim = next(s.path for s in truth.slices if s.k == 2)
    ds = pydicom.dcmread(victim)
    del ds.ImagePositionPatient
    ds.save_as(victim, enforce_file_format=True)
    with unchanged(tmp_path):
        with pytest.raises(rtkit.GeometryError) as exc:
            read(reader, tmp_path / "ct")
    msg = str(exc.value)
    assert victim.name in msg
    assert "ImagePositionPatient" in msg


def _truncation_offset(path: Path, where: str) -> int:
    pix = pixel_data_offset(path)
    return {
        "200_bytes": 200,
        "half_header": pix // 2,
        "at_pixel_tag": pix,
        "in_pixel_data": pix + 12 + (path.stat().st_size - pix - 12) // 2,
    }[where]


TRUNCATIONS = ["200_bytes", "half_header", "at_pixel_tag", "in_pixel_data"]


@pytest.mark.parametrize("where", TRUNCATIONS)
def test_truncated_single_file(tmp_path, where):
    truth = write_image_series(tmp_path / "ct", shape=(1, 16, 16))
    path = truth.paths[0]
    truncate(path, _truncation_offset(path, where))
    with unchanged(tmp_path):
        with pytest.raises(rtkit.DicomReadError) as exc:
            rtkit.read_image([path])
    assert path.name in str(exc.value)


@pytest.mark.parametrize("where", TRUNCATIONS)
def test_truncated_end_slice_in_series(tmp_path, where):
    # the geometrically last slice is cut short: dropping it silently would
    # give a plausible but wrong (shorter) volume
    truth = write_image_series(tmp_path / "ct", shape=(5, 16, 16))
    path = next(s.path for s in truth.slices if s.k == 4)
    truncate(path, _truncation_offset(path, where))
    with unchanged(tmp_path):
        with pytest.raises(rtkit.DicomReadError) as exc:
            rtkit.read_image(tmp_path / "ct")
    assert path.name in str(exc.value)


@pytest.mark.parametrize("where", TRUNCATIONS)
def test_scan_never_raises_on_truncated_files(tmp_path, where):
    truth = write_image_series(tmp_path / "ct", shape=(5, 16, 16))
    path = next(s.path for s in truth.slices if s.k == 2)
    truncate(path, _truncation_offset(path, where))
    with unchanged(tmp_path):
        index = rtkit.scan(tmp_path / "ct")
    flagged = {p for p, _ in index.unreadable} | {p for p, _ in index.skipped}
    indexed = {i.path for i in index.instances}
    others = set(truth.paths) - {path}
    assert others <= indexed
    if where in ("200_bytes", "half_header"):
        # the header itself is cut: the file must be reported, not indexed
        assert path in flagged, f"{where}: {path.name} neither unreadable nor skipped"
        assert path not in indexed
    else:
        assert path in flagged or path in indexed


@pytest.mark.parametrize("reader", READERS)
def test_non_dicom_files_are_ignored(tmp_path, reader):
    truth = write_image_series(tmp_path / "ct")
    junk = [
        write_non_dicom(tmp_path / "ct", "README.txt"),
        write_non_dicom(tmp_path / "ct", "looks_like.dcm"),
    ]
    binary = tmp_path / "ct" / "thumbnail"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    junk.append(binary)
    with unchanged(tmp_path):
        if reader == "read_image":
            img = rtkit.read_image(tmp_path / "ct")
        else:
            index = rtkit.scan(tmp_path / "ct")
            check_index(index, truth, extra_skipped=3)
            assert {Path(p) for p, _ in index.skipped} == set(junk)
            img = rtkit.load(tmp_path / "ct").ct
        assert_image_matches(img, truth)


def test_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(rtkit.DicomReadError) as exc:
        rtkit.read_image(empty)
    assert str(empty) in str(exc.value)
    with pytest.raises(rtkit.AmbiguousCaseError):
        rtkit.load(empty)
    assert list(empty.iterdir()) == []


def test_folder_with_only_non_dicom(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    write_non_dicom(folder, "a.dcm")
    with unchanged(tmp_path):
        with pytest.raises(rtkit.DicomReadError):
            rtkit.read_image(folder)
        assert len(rtkit.scan(folder).skipped) == 1
        with pytest.raises(rtkit.AmbiguousCaseError):
            rtkit.load(folder)


def test_builder_truth_is_self_consistent(tmp_path):
    """The builder writes what its truth says (checked with pydicom, not rtkit)."""
    truth = write_image_series(tmp_path / "ct", orientation=ORIENTATIONS["OBLIQUE"], slice_step=-2.0)
    numbers = []
    for s in truth.slices:
        ds = pydicom.dcmread(s.path)
        np.testing.assert_array_equal(ds.pixel_array, s.stored)
        np.testing.assert_array_equal([float(v) for v in ds.ImagePositionPatient], s.position)
        assert ds.SOPInstanceUID == s.sop_instance_uid
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        numbers.append((s.k, int(ds.InstanceNumber)))
    # InstanceNumber order matches neither the geometric order nor its reverse
    inst_order = [k for k, _ in sorted(numbers, key=lambda t: t[1])]
    assert inst_order not in (list(range(6)), list(range(5, -1, -1)))
    assert len(file_hashes(tmp_path)) == 6
