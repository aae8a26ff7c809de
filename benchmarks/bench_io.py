"""I/O benchmark: ``rtkit.scan`` and ``rtkit.read_image`` against bare pydicom loops.

Generates synthetic DICOM data under a work folder (default ``benchmarks/_work/``,
reused between runs unless ``--regen``):

* ``scan/``: 2,000 small CT files (20 series x 100 slices of 64x64 px) in a mixed
  layout (flat ``.dcm`` files, random names without extension, nested
  subfolders, one series written without preamble or file meta) plus 20
  non-DICOM files;
* ``volume/``: one CT series of 200 slices of 512x512 int16,
  ExplicitVRLittleEndian, RescaleSlope 1 and RescaleIntercept -1024, written in
  shuffled order under random file names.

Then it times, in one run and after one warm-up run of each method (which fills
the OS file cache), the best of ``--repeat`` runs of:

* scan: ``rtkit.scan(folder)`` vs ``os.walk`` + ``pydicom.dcmread(f,
  stop_before_pixels=True, force=True)`` in try/except per file;
* load: ``rtkit.read_image(folder).array`` vs ``dcmread`` of each file, sort by
  ImagePositionPatient[2], ``np.stack`` of the pixel arrays and the rescale;

measures the peak memory of each load in its own subprocess, checks that both
methods agree, and prints a table with the ratio rtkit/baseline against the
targets (scan <= 1.3x, load <= 1.5x) and the machine facts.

Run:  .venv/bin/python benchmarks/bench_io.py [--repeat N] [--regen] [--work DIR]
Exit status 1 if a correctness check fails (a missed time target only prints FAIL).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from _common import machine_facts, proc_status, run_json
from _common import mib as _mib
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

import rtkit

# ----------------------------------------------------------------- parameters
SCAN_SERIES = 20
SCAN_SLICES = 100  # per series
SCAN_PX = 64
NON_DICOM = 20
VOL_SLICES = 200
VOL_PX = 512
VOL_PIXEL_SPACING = 0.9765625  # mm
VOL_SLICE_STEP = 1.5  # mm
INTERCEPT = -1024
SEED = 20240601
TARGETS = {"scan": 1.3, "load": 1.5}
#: Changing anything above must change this, so that old work folders are regenerated.
DATA_VERSION = 1

MANIFEST = {
    "data_version": DATA_VERSION,
    "scan_series": SCAN_SERIES,
    "scan_slices": SCAN_SLICES,
    "scan_px": SCAN_PX,
    "non_dicom": NON_DICOM,
    "vol_slices": VOL_SLICES,
    "vol_px": VOL_PX,
    "seed": SEED,
}

DEFAULT_WORK = Path(__file__).resolve().parent / "_work"


# ----------------------------------------------------------------- data generation
def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["rtkit-bench-io", *map(str, parts)])


def _ct_dataset(
    *,
    patient: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    series_number: int,
    description: str,
    index: int,
    z: float,
    px: int,
    spacing: float,
    thickness: float,
    pixels: np.ndarray,
) -> Dataset:
    """A single-frame CT Image Storage dataset with the usual CT headers."""
    sop_uid = _uid(series_uid, index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240601"
    ds.SeriesDate = "20240601"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = "rtkit-bench"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Benchmark study"
    ds.SeriesDescription = description
    ds.PatientName = f"Bench^{patient}"
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.SliceThickness = thickness
    ds.KVP = 120
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = index + 1
    half = (px / 2 - 0.5) * spacing
    ds.ImagePositionPatient = [-half, -half, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = z
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = px
    ds.Columns = px
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def _phantom_slice(rng: np.random.Generator, k: int, n: int, px: int) -> np.ndarray:
    """Stored values (HU + 1024) of a body-like ellipse with lungs and a spine, plus noise."""
    yy, xx = np.mgrid[0:px, 0:px].astype(np.float32) / px - 0.5
    hu = np.full((px, px), -1000.0, dtype=np.float32)
    body = (xx / 0.42) ** 2 + (yy / 0.3) ** 2 <= 1
    hu[body] = 40.0
    if n // 4 <= k < 3 * n // 4:
        lungs = ((np.abs(xx) - 0.18) / 0.12) ** 2 + (yy / 0.18) ** 2 <= 1
        hu[lungs] = -800.0
    spine = (xx / 0.05) ** 2 + ((yy - 0.17) / 0.05) ** 2 <= 1
    hu[spine] = 700.0
    hu += rng.normal(0.0, 15.0, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu) - INTERCEPT, 0, 4095).astype(np.int16)


def _non_dicom_files(rng: random.Random) -> list[tuple[str, bytes]]:
    """NON_DICOM files that no DICOM reader should accept (sniff-proof first bytes)."""
    fixed = [
        ("README.txt", b"Exported by the benchmark generator.\n"),
        ("notes.md", b"# notes\nnothing to see\n"),
        ("manifest.json", json.dumps({"files": 2000}).encode()),
        ("index.csv", b"file,series\na,1\nb,2\n"),
        ("thumb.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(64)),
        ("archive.zip", b"PK\x03\x04" + bytes(64)),
        ("empty.dat", b""),
        (".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(64)),
        ("Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64)),
    ]
    out = list(fixed)
    while len(out) < NON_DICOM:
        size = rng.randint(16, 4096)
        blob = rng.randbytes(size)
        # Keep random blobs from looking like a preamble-less DICOM data set.
        if blob[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x08"):
            continue
        out.append((f"blob_{len(out):02d}.bin" if len(out) % 2 else f"{rng.getrandbits(48):012x}", blob))
    return out[:NON_DICOM]


def _generate_scan(folder: Path) -> None:
    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    base = nrng.integers(0, 2000, size=(SCAN_PX, SCAN_PX)).astype(np.int16)
    for s in range(SCAN_SERIES):
        patient = f"PAT{s // 5:02d}"  # 4 patients of 5 series
        study_uid = _uid("study", patient)
        series_uid = _uid("series", s)
        frame_uid = _uid("frame", patient)
        layout = s % 5
        for k in range(SCAN_SLICES):
            ds = _ct_dataset(
                patient=patient,
                study_uid=study_uid,
                series_uid=series_uid,
                frame_uid=frame_uid,
                series_number=s + 1,
                description=f"CT series {s + 1}",
                index=k,
                z=-100.0 + 2.0 * k,
                px=SCAN_PX,
                spacing=4.0,
                thickness=2.0,
                pixels=base + k,
            )
            if layout == 0:  # flat, conventional names
                path = folder / f"CT_{s:02d}_{k:03d}.dcm"
            elif layout == 1:  # random names, no extension, one folder per series
                path = folder / f"dir{s:02d}" / f"{rng.getrandbits(64):016x}"
            elif layout == 2:  # PACS-style nested folders
                path = folder / patient / f"study{s % 3}" / f"series{s:02d}" / f"IM{k:05d}"
            elif layout == 3:  # random names with extension, flat
                path = folder / f"{rng.getrandbits(64):016x}.dcm"
            else:  # random names, no extension, deep folder
                path = folder / "export" / "a" / "b" / f"s{s:02d}" / f"{rng.getrandbits(64):016x}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if s == SCAN_SERIES - 1:
                # One series as bare data sets: no preamble, no file meta, implicit VR.
                del ds.file_meta
                pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
            else:
                ds.save_as(path, enforce_file_format=True)
    for i, (name, blob) in enumerate(_non_dicom_files(rng)):
        sub = [folder, folder / "dir01", folder / "PAT00", folder / "export" / "a"][i % 4]
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_bytes(blob)


def _generate_volume(folder: Path) -> None:
    rng = random.Random(SEED + 1)
    nrng = np.random.default_rng(SEED + 1)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = _uid("vstudy"), _uid("vseries"), _uid("vframe")
    order = list(range(VOL_SLICES))
    rng.shuffle(order)
    for k in order:  # shuffled write order, random names
        ds = _ct_dataset(
            patient="VOL01",
            study_uid=study_uid,
            series_uid=series_uid,
            frame_uid=frame_uid,
            series_number=1,
            description="Planning CT 512",
            index=k,
            z=-150.0 + VOL_SLICE_STEP * k,
            px=VOL_PX,
            spacing=VOL_PIXEL_SPACING,
            thickness=VOL_SLICE_STEP,
            pixels=_phantom_slice(nrng, k, VOL_SLICES, VOL_PX),
        )
        ds.save_as(folder / f"{rng.getrandbits(64):016x}", enforce_file_format=True)


def prepare(work: Path, regen: bool) -> bool:
    """Generate the data unless a complete, matching set is there. True if generated."""
    manifest = work / "manifest.json"
    if not regen and manifest.is_file():
        try:
            if json.loads(manifest.read_text()) == MANIFEST:
                return False
        except (OSError, ValueError):
            pass
    for sub in ("scan", "volume"):
        shutil.rmtree(work / sub, ignore_errors=True)
    manifest.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    _generate_scan(work / "scan")
    _generate_volume(work / "volume")
    manifest.write_text(json.dumps(MANIFEST, indent=2) + "\n")
    return True


# ----------------------------------------------------------------- the methods
def baseline_scan(folder: Path) -> tuple[int, int]:
    """os.walk + header-only dcmread(force=True) per file; (read, failed)."""
    ok = failed = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            try:
                pydicom.dcmread(os.path.join(dirpath, name), stop_before_pixels=True, force=True)
                ok += 1
            except Exception:
                failed += 1
    return ok, failed


def rtkit_scan(folder: Path) -> rtkit.Index:
    return rtkit.scan(folder)


def baseline_load(folder: Path) -> np.ndarray:
    """dcmread all, sort by z, stack pixel arrays, rescale (int16 + int16(intercept), in place)."""
    datasets = [
        pydicom.dcmread(os.path.join(dirpath, name))
        for dirpath, _dirnames, filenames in os.walk(folder)
        for name in filenames
    ]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    arr = np.stack([ds.pixel_array for ds in datasets])
    slope = float(datasets[0].RescaleSlope)
    intercept = float(datasets[0].RescaleIntercept)
    if slope == 1 and intercept == int(intercept):
        arr = arr.astype(np.int16, copy=False)
        arr += np.int16(intercept)
    else:
        arr = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return arr


def rtkit_load(folder: Path) -> np.ndarray:
    return rtkit.read_image(folder).array


LOADS: dict[str, Callable[[Path], Any]] = {"rtkit": rtkit_load, "pydicom": baseline_load}


# ----------------------------------------------------------------- measurement
def _timed(fn: Callable[[Path], Any], folder: Path) -> tuple[tuple[float, float], Any]:
    """((wall s, CPU s), result) of one call."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    res = fn(folder)
    return (time.perf_counter() - t0, time.process_time() - c0), res


def compare(
    rt_fn: Callable[[Path], Any], base_fn: Callable[[Path], Any], folder: Path, repeat: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], Any, Any, list[str]]:
    """Warm-up run of each (results kept for checking), then ``repeat`` interleaved runs.

    Returns (rtkit times, baseline times, rtkit result, baseline result, rtkit's warnings
    in the warm-up run).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, rt_res = _timed(rt_fn, folder)
    rt_warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's notes on non-DICOM files read with force
        _, base_res = _timed(base_fn, folder)
        rt_t, base_t = [], []
        for _ in range(repeat):
            dt, res = _timed(rt_fn, folder)
            rt_t.append(dt)
            del res
            dt, res = _timed(base_fn, folder)
            base_t.append(dt)
            del res
    return rt_t, base_t, rt_res, base_res, rt_warnings


def child_memory(method: str, mode: str, work: Path) -> None:
    """Run one load in this (fresh) process and print its peak memory as JSON."""
    fn = LOADS[method]
    folder = work / "volume"
    warnings.simplefilter("ignore")
    gc.collect()
    out: dict[str, Any] = {"method": method, "mode": mode}
    if mode == "rss":
        # VmHWM, not getrusage's ru_maxrss: after fork/exec the latter keeps the parent's peak.
        before = proc_status("VmRSS")
        arr = fn(folder)
        out["peak_delta"] = max(0, proc_status("VmHWM") - before)
    else:
        tracemalloc.start()
        arr = fn(folder)
        out["peak_delta"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out["nbytes"] = int(arr.nbytes)
    out["dtype"] = str(arr.dtype)
    print(json.dumps(out))


def measure_memory(method: str, mode: str, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(work), "--child", method, mode]
    return run_json(cmd, f"memory child {method}/{mode}")


# ----------------------------------------------------------------- reporting

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder (default %(default)s)")
    ap.add_argument("--regen", action="store_true", help="regenerate the data even if present")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method, best kept (default 3)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    work = args.work.resolve()
    if args.child:
        child_memory(args.child[0], args.child[1], work)
        return 0
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    t0 = time.perf_counter()
    generated = prepare(work, args.regen)
    gen_note = f"generated in {time.perf_counter() - t0:.1f} s" if generated else "reused"
    scan_dir, vol_dir = work / "scan", work / "volume"
    n_scan_files = sum(len(f) for _, _, f in os.walk(scan_dir))
    n_dicom = SCAN_SERIES * SCAN_SLICES

    print("rtkit I/O benchmark")
    for line in machine_facts():
        print("  " + line)
    print(f"  data:     {work} ({gen_note})")
    print(f"  timing:   best of {args.repeat} interleaved runs after 1 warm-up run each (OS file cache warm)")
    print(f"  load avg: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at start")
    print()

    # --- scan
    rt_t, base_t, index, (base_ok, base_failed), scan_warn = compare(
        rtkit_scan, baseline_scan, scan_dir, args.repeat
    )
    # --- load
    rt_lt, base_lt, rt_arr, base_arr, load_warn = compare(rtkit_load, baseline_load, vol_dir, args.repeat)

    rows = [
        ("scan", f"scan {n_scan_files:,} files", rt_t, base_t),
        ("load", f"load {VOL_SLICES}x{VOL_PX}x{VOL_PX}", rt_lt, base_lt),
    ]
    print(f"{'benchmark':<22}{'rtkit s':>9}{'pydicom s':>11}{'ratio':>8}{'target':>9}  result"
          f"{'CPU ratio':>12}")
    for key, label, rt_runs, base_runs in rows:
        rt, base = min(w for w, _ in rt_runs), min(w for w, _ in base_runs)
        cpu_ratio = min(c for _, c in rt_runs) / min(c for _, c in base_runs)
        ratio = rt / base
        verdict = "PASS" if ratio <= TARGETS[key] else "FAIL"
        print(f"{label:<22}{rt:>9.3f}{base:>11.3f}{ratio:>7.2f}x{'<= ' + f'{TARGETS[key]:.1f}x':>9}  "
              f"{verdict:<6}{cpu_ratio:>8.2f}x")
    print()
    print("  times: best wall clock; CPU ratio = best process CPU time rtkit / pydicom (less sensitive")
    print("         to other load on the machine). All runs, wall s:")
    for key, _label, rt_runs, base_runs in rows:
        print(f"    {key} rtkit " + " ".join(f"{w:.3f}" for w, _ in rt_runs)
              + " | pydicom " + " ".join(f"{w:.3f}" for w, _ in base_runs))
    print("  scan baseline: os.walk + dcmread(stop_before_pixels=True, force=True) in try/except")
    print("  load baseline: os.walk + dcmread, sort by ImagePositionPatient[2], np.stack(pixel_array),")
    print("                 rescale as int16: arr.astype(int16, copy=False); arr += int16(intercept)")
    print()

    # --- correctness
    checks: list[tuple[str, bool]] = []
    n_found = sum(len(s) for s in index.series)
    checks.append((f"scan found {n_found} of {n_dicom} DICOM files in {len(index.series)} series "
                   f"(expected {SCAN_SERIES})", n_found == n_dicom and len(index.series) == SCAN_SERIES))
    checks.append((f"scan skipped {len(index.skipped)} non-DICOM files (expected {NON_DICOM}), "
                   f"{len(index.unreadable)} unreadable (expected 0)",
                   len(index.skipped) == NON_DICOM and not index.unreadable))
    equal = rt_arr.shape == base_arr.shape and bool(np.array_equal(rt_arr, base_arr))
    checks.append((f"load: rtkit array {rt_arr.shape} {rt_arr.dtype} == pydicom array "
                   f"{base_arr.shape} {base_arr.dtype}, values equal exactly", equal))
    for what, caught in (("scan", scan_warn), ("read_image", load_warn)):
        checks.append((f"rtkit {what} warned {len(caught)} time(s) on clean data"
                       + (f": {caught[0][:100]}" if caught else ""), not caught))
    print("correctness")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    print(f"  info  pydicom scan baseline: {base_ok} files parsed, {base_failed} raised "
          "(force=True accepts some non-DICOM files)")
    if rt_arr.dtype != base_arr.dtype:
        print(f"  note  rtkit returns {rt_arr.dtype} ({_mib(rt_arr.nbytes)}) where the HU values fit "
              f"{base_arr.dtype} ({_mib(base_arr.nbytes)}), range {int(base_arr.min())}..{int(base_arr.max())}")
    print()
    del rt_arr, base_arr, index
    gc.collect()

    # --- memory
    if not args.no_memory:
        hu_bytes = VOL_SLICES * VOL_PX * VOL_PX * 2
        print(f"peak memory of one load, each in its own subprocess (int16 HU volume = {_mib(hu_bytes)})")
        print(f"{'method':<10}{'peak RSS +':>12}{'x int16':>9}{'tracemalloc':>13}{'x int16':>9}  result array")
        for method in ("rtkit", "pydicom"):
            rss = measure_memory(method, "rss", work)
            tm = measure_memory(method, "tracemalloc", work)
            print(f"{method:<10}{_mib(rss['peak_delta']):>12}{rss['peak_delta'] / hu_bytes:>8.1f}x"
                  f"{_mib(tm['peak_delta']):>13}{tm['peak_delta'] / hu_bytes:>8.1f}x"
                  f"  {rss['dtype']} {_mib(rss['nbytes'])}")
        print("  peak RSS + = VmHWM after the load minus VmRSS before it; tracemalloc = traced peak")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
