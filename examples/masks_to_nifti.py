"""Structure masks to NIfTI for a machine-learning pipeline.

Rasterises every non-empty ROI of a case's RT Structure Set on its CT grid and
writes, in the output folder:

- ``ct.nii.gz``: the CT in HU, as read (``Image.to_nifti``);
- ``masks/<ROI>.nii.gz``: one uint8 0/1 mask per ROI (voxel centre inside the
  slab solid of the contours), on exactly the CT's grid and affine;
- ``labels.nii.gz``: one uint16 label map (label i = the i-th ROI of
  ``labels.csv``; where ROIs overlap the later one wins, so list targets last);
- ``labels.csv``: ``label, name, type, voxels, mask_volume_cc, contour_volume_cc``;
- ``masks_preview.png``: the middle CT slice of each ROI with its mask outlined.

NIfTI files are RAS, as nibabel and most ML tools expect; the affine keeps every
voxel at its DICOM patient position (``Image.to_nifti``).  Default case:
rtkit's built-in synthetic case (written into ``OUT_DIR/case``).

Usage::

    python examples/masks_to_nifti.py OUT_DIR [--case FOLDER] [--fractional]
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import rtkit  # noqa: E402


def safe_name(name: str) -> str:
    """A file name for an ROI name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()) or "roi"


def preview(ct: rtkit.Image, masks: dict[str, np.ndarray], colors: dict[str, tuple], path: Path) -> Path:
    """The middle axial CT slice of each ROI, its mask outlined in the ROI colour."""
    n = len(masks)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, m) in zip(axes.flat, masks.items(), strict=False):
        k = int(np.median(np.nonzero(m.any(axis=(1, 2)))[0]))
        ax.imshow(ct.array[k], cmap="gray", vmin=-160, vmax=240, interpolation="nearest")
        ax.contour(m[k].astype(float), levels=[0.5], colors=[np.asarray(colors[name]) / 255.0], linewidths=1.5)
        ax.set_title(f"{name} (slice {k})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (created)")
    ap.add_argument("--case", type=Path, default=None,
                    help="folder holding one case (default: rtkit's synthetic case, written into OUT/case)")
    ap.add_argument("--fractional", action="store_true",
                    help="also write float32 occupancy masks (fraction of each voxel inside) as masks/<ROI>_frac.nii.gz")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "masks").mkdir(exist_ok=True)
    case = rtkit.load(args.case or rtkit.datasets.synthetic_case(args.out / "case"))
    ct, ss = case.ct, case.structures
    if ct is None or ss is None:
        raise SystemExit(f"{case}: needs a CT and an RT Structure Set")

    ct.to_nifti(args.out / "ct.nii.gz", overwrite=True)
    voxel_cc = float(np.prod(ct.grid.spacing)) / 1000.0
    labels = np.zeros(ct.grid.shape, dtype=np.uint16)
    masks, colors, rows = {}, {}, []
    for name in ss.names:
        s = ss[name]
        if s.is_empty:
            print(f"  skipped {name}: no contours")
            continue
        m = s.mask(ct.grid)  # bool, indexed like the CT (slice, row, column)
        if not m.any():
            print(f"  skipped {name}: no voxel centre inside")
            continue
        label = len(rows) + 1
        labels[m] = label
        rtkit.Image(m.astype(np.uint8), ct.grid).to_nifti(args.out / "masks" / f"{safe_name(name)}.nii.gz",
                                                         overwrite=True)
        if args.fractional:
            rtkit.Image(s.mask(ct.grid, fractional=True), ct.grid).to_nifti(
                args.out / "masks" / f"{safe_name(name)}_frac.nii.gz", overwrite=True)
        masks[name], colors[name] = m, tuple(s.color or (255, 0, 0))
        rows.append({"label": label, "name": name, "type": s.type, "voxels": int(m.sum()),
                     "mask_volume_cc": float(m.sum()) * voxel_cc, "contour_volume_cc": float(s.volume)})
        print(f"  {label:3d} {name:<16} {int(m.sum()):8d} voxels  {rows[-1]['mask_volume_cc']:9.2f} cm3 "
              f"(contours {s.volume:.2f} cm3)")
    rtkit.Image(labels, ct.grid).to_nifti(args.out / "labels.nii.gz", overwrite=True)
    with open(args.out / "labels.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["label", "name", "type", "voxels", "mask_volume_cc", "contour_volume_cc"])
        w.writeheader()
        w.writerows(rows)
    if masks:
        preview(ct, masks, colors, args.out / "masks_preview.png")
    print(f"wrote {len(rows)} masks, labels.nii.gz, labels.csv, ct.nii.gz and masks_preview.png to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
