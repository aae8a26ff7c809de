"""PET/MR onto CT review: register the MR onto the planning CT, SUV of the PET, fusion figures.

Uses patient STS_001 of the soft-tissue sarcoma set in the real test data
(``mirp-sts-ct-pet-mr``; TCIA Soft-tissue-Sarcoma, CC BY 3.0), located by
``--data``, ``$RTKIT_TEST_DATA`` or ``../shared/data`` beside the repository:

- CT: the cropped planning CT and its GTV (``cropped/STS_001/CT``);
- PET: the raw FDG PET (Bq/mL, ``raw/STS_001/FDG_PET``), acquired on the
  PET/CT so it shares the CT's frame of reference; converted to body-weight
  SUV from its header with ``rtkit.suv``;
- MR: the raw T1 MR (``raw/STS_001/MR_T1``), oblique, in its own frame of
  reference; registered onto the CT with ``rtkit.register`` (rigid, Mattes
  mutual information), and its GTV carried onto the CT with the transform.

Writes to the output folder:

- ``pet_mr_review.png``: PET (SUV) fused on the CT with the CT GTV, MR fused on
  the CT, a CT/MR checkerboard, and a coronal PET MIP;
- ``pet_mr_review.csv``: ``quantity, value, unit`` (SUVmax / SUVmean in the GTV,
  GTV volumes on CT and MR, the registration's rotation, translation and metric);
- ``mr_to_ct_reg.dcm``: the registration as a DICOM Spatial Registration object.

Usage::

    python examples/pet_mr_review.py OUT_DIR [--data DIR] [--patient STS_001]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import rtkit  # noqa: E402


def data_root(arg: Path | None = None) -> Path:
    """The real test data: ``--data``, else ``$RTKIT_TEST_DATA``, else ``../shared/data`` beside the repository."""
    if arg is not None:
        return arg
    env = os.environ.get("RTKIT_TEST_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def find_gtv(path: Path) -> tuple[rtkit.StructureSet, str]:
    """The RT Structure Set under ``path`` and the name of its first non-empty ROI named GTV..."""
    for f in sorted(path.glob("*.dcm")) if path.is_dir() else [path]:
        ss = rtkit.read_structures(f)
        for name in ss.names:
            if name.upper().startswith("GTV") and not ss[name].is_empty:
                return ss, name
    raise SystemExit(f"{path}: no non-empty GTV found")


def draw_contours(ax, structure: rtkit.Structure, z: float, color: str = "lime") -> None:
    """Outline the structure's contours on the axial plane nearest ``z`` (axes: LPS x, y in mm)."""
    planes = sorted({round(float(c.points[0, 2]), 3) for c in structure.contours if len(c.points)})
    if not planes:
        return
    zc = min(planes, key=lambda p: abs(p - z))
    for c in structure.contours:
        if len(c.points) >= 3 and abs(float(c.points[0, 2]) - zc) < 1e-3:
            xy = np.vstack([c.points[:, :2], c.points[:1, :2]])
            ax.plot(xy[:, 0], xy[:, 1], color=color, linewidth=1.2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--data", type=Path, default=None, help="the real test data folder")
    ap.add_argument("--patient", default="STS_001", help="patient of mirp-sts-ct-pet-mr with raw PET and MR")
    args = ap.parse_args(argv)
    root = data_root(args.data) / "mirp-sts-ct-pet-mr"
    cropped, raw = root / "cropped" / args.patient, root / "raw" / args.patient
    if not raw.is_dir():
        raise SystemExit(f"{raw} not found: give --data or set RTKIT_TEST_DATA")
    args.out.mkdir(parents=True, exist_ok=True)

    ct = rtkit.read_image(cropped / "CT" / "dicom" / "image")
    ct_ss, name = find_gtv(cropped / "CT" / "dicom" / "mask")
    gtv = ct_ss[name]
    pet = rtkit.suv(rtkit.read_image(raw / "FDG_PET" / "image"))  # Bq/mL -> SUVbw (g/mL)
    mr = rtkit.read_image(raw / "MR_T1" / "image")
    mr_ss, mr_name = find_gtv(raw / "MR_T1" / "mask")
    mr_gtv = mr_ss[mr_name]
    print(f"CT {ct.grid.shape} {np.round(ct.grid.spacing, 2).tolist()} mm; PET {pet.grid.shape}; "
          f"MR {mr.grid.shape} (frame of reference {'shared' if mr.grid.frame_of_reference_uid == ct.grid.frame_of_reference_uid else 'its own'})")

    t0 = time.perf_counter()
    reg = rtkit.register(ct, mr)  # rigid, Mattes MI; reg.matrix maps MR mm -> CT mm (LPS)
    print(f"registered MR -> CT in {time.perf_counter() - t0:.1f} s: rotation {reg.rotation_deg:.2f} deg, "
          f"translation {np.round(reg.translation_mm, 1).tolist()} mm, {reg.metric_name} {reg.metric:.4f}")
    reg.save(args.out / "mr_to_ct_reg.dcm", overwrite=True)
    mr_gtv_on_ct = reg.transform_structures(mr_ss)[mr_name]  # contours in CT coordinates

    # SUV in the CT GTV, on the PET grid (fractional occupancy weights the partial voxels)
    w = gtv.mask(pet.grid, fractional=True)
    suv = pet.array
    suv_max = float(suv[w > 0.5].max())
    suv_mean = float((suv * w).sum() / w.sum())
    centre = np.mean(np.vstack([c.points for c in gtv.contours if len(c.points)]), axis=0)
    mr_centre = np.mean(np.vstack([c.points for c in mr_gtv_on_ct.contours if len(c.points)]), axis=0)
    rows = [
        ("SUVmax in GTV", suv_max, "g/mL"),
        ("SUVmean in GTV", suv_mean, "g/mL"),
        ("GTV volume (CT)", gtv.volume, "cm3"),
        ("GTV volume (MR)", mr_gtv.volume, "cm3"),
        ("GTV centroid distance CT - MR on CT", float(np.linalg.norm(centre - mr_centre)), "mm"),
        ("registration rotation", reg.rotation_deg, "deg"),
        *((f"registration translation {a}", float(t), "mm") for a, t in zip("xyz", reg.translation_mm, strict=True)),
        (f"registration metric ({reg.metric_name})", float(reg.metric), ""),
    ]
    with open(args.out / "pet_mr_review.csv", "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["quantity", "value", "unit"])
        wr.writerows(rows)
    for q, v, u in rows:
        print(f"  {q:<40} {v:10.3f} {u}")

    z = float(centre[2])
    fig, axes = plt.subplots(2, 2, figsize=(12, 11))
    rtkit.plot.fusion(ct, pet, z=z, alpha=0.5, threshold=1.0, ax=axes[0, 0])
    draw_contours(axes[0, 0], gtv, z)
    axes[0, 0].set_title(f"PET SUV on CT, z = {z:.1f} mm (green: GTV)")
    rtkit.plot.fusion(ct, mr, reg, z=z, alpha=0.5, cmap="viridis", ax=axes[0, 1])
    draw_contours(axes[0, 1], gtv, z)
    draw_contours(axes[0, 1], mr_gtv_on_ct, z, color="magenta")
    axes[0, 1].set_title("MR on CT (green: CT GTV, magenta: MR GTV)")
    rtkit.plot.checkerboard(ct, mr, reg, z=z, ax=axes[1, 0])
    rtkit.plot.mip(pet, "coronal", ax=axes[1, 1])
    axes[1, 1].set_title("PET MIP (SUV), coronal")
    fig.tight_layout()
    fig.savefig(args.out / "pet_mr_review.png", dpi=90)
    plt.close(fig)
    print(f"wrote {args.out / 'pet_mr_review.png'}, {args.out / 'pet_mr_review.csv'} and {args.out / 'mr_to_ct_reg.dcm'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
