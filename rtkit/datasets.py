"""Built-in sample data, generated in code (no downloads).

:func:`synthetic_case` writes a small, complete and self-consistent planning
case: a CT of an elliptical water phantom with two lungs and a spine, an RT
Structure Set (BODY, Lung_L, Lung_R, Spine, PTV), an RT Plan (4 static 6 MV
beams, 60 Gy in 30 fractions) and a PLAN RT Dose (an analytical dose that is
a smooth plateau around the PTV).  Every object references the others by UID,
as a treatment planning system would export them.

The analytical definitions are module constants so tests can compute
expected answers independently of the DICOM writer.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from ._atomic import atomic_path
from .errors import OutputExistsError

__all__ = ["synthetic_case", "PHANTOM"]

#: Geometry and content of the synthetic phantom (mm, LPS, HFS).
PHANTOM = {
    "shape": (40, 64, 64),  # slices, rows, columns
    "pixel_spacing": (4.0, 4.0),  # row, column spacing (mm)
    "slice_spacing": 3.0,
    "origin": (-126.0, -126.0, -58.5),  # centre of voxel (0, 0, 0)
    "body": {"center": (0.0, 0.0), "axes": (110.0, 80.0), "hu": 0.0},
    "lungs": {
        "Lung_L": {"center": (55.0, -5.0), "axes": (30.0, 40.0), "z": (-40.0, 40.0), "hu": -750.0},
        "Lung_R": {"center": (-55.0, -5.0), "axes": (30.0, 40.0), "z": (-40.0, 40.0), "hu": -750.0},
    },
    "spine": {"center": (0.0, 55.0), "radius": 12.0, "hu": 700.0},
    "ptv": {"center": (0.0, 0.0, 0.0), "radius": 20.0},
    "air_hu": -1000.0,
    "prescription_gy": 60.0,
    "fractions": 30,
    "dose": {"plateau_radius": 24.0, "falloff_mm": 4.0, "bath_gy": 2.0},
    "dose_pixel_spacing": (5.0, 5.0),
    "dose_shape": (21, 36, 44),
}

_UID_ROOT = "rtkit-synthetic-case-v1"


def _uid(name: str) -> str:
    return generate_uid(entropy_srcs=[_UID_ROOT, name])


def analytical_dose(xyz: np.ndarray) -> np.ndarray:
    """The synthetic plan's dose (Gy) at LPS points ``xyz`` (..., 3) in mm."""
    p = PHANTOM
    r = np.linalg.norm(np.asarray(xyz, float) - np.asarray(p["ptv"]["center"]), axis=-1)
    d = p["dose"]
    return d["bath_gy"] + (p["prescription_gy"] * 1.03 - d["bath_gy"]) / (
        1.0 + np.exp((r - d["plateau_radius"]) / d["falloff_mm"])
    )


def _base(ds: Dataset, sop_class: str, sop_uid: str, modality: str, series: str, number: int) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "rtkit"
    ds.ReferringPhysicianName = ""
    ds.OperatorsName = ""
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "RTKIT-DEMO-001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = _uid("study")
    ds.SeriesInstanceUID = _uid(series)
    ds.StudyID = "1"
    ds.SeriesNumber = number
    ds.StudyDescription = "rtkit synthetic case"


def _ellipse(x, y, c, axes) -> np.ndarray:
    return ((x - c[0]) / axes[0]) ** 2 + ((y - c[1]) / axes[1]) ** 2 <= 1.0


def _ct_slices(p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU array (slices, rows, cols) and the x (columns) and y (rows) centre coordinates."""
    ns, nr, nc = p["shape"]
    dr, dc = p["pixel_spacing"]
    x = p["origin"][0] + dc * np.arange(nc)
    y = p["origin"][1] + dr * np.arange(nr)
    z = p["origin"][2] + p["slice_spacing"] * np.arange(ns)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    hu = np.full((ns, nr, nc), p["air_hu"], dtype=np.float64)
    body = _ellipse(xx, yy, p["body"]["center"], p["body"]["axes"])
    spine = _ellipse(xx, yy, p["spine"]["center"], (p["spine"]["radius"],) * 2)
    for k, zk in enumerate(z):
        hu[k][body] = p["body"]["hu"]
        for lung in p["lungs"].values():
            if lung["z"][0] <= zk <= lung["z"][1]:
                hu[k][_ellipse(xx, yy, lung["center"], lung["axes"])] = lung["hu"]
        hu[k][spine] = p["spine"]["hu"]
    return hu, x, y


def _ref(obj: Dataset) -> Dataset:
    """A reference item (ReferencedSOPClassUID + ReferencedSOPInstanceUID) to ``obj``."""
    item = Dataset()
    item.ReferencedSOPClassUID = obj.SOPClassUID
    item.ReferencedSOPInstanceUID = obj.SOPInstanceUID
    return item


def _write(ds: Dataset, path: Path, overwrite: bool = False) -> None:
    """Write ``ds`` atomically; an identical existing file is left alone, a different one is
    replaced only with ``overwrite``."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if path.is_file() and not overwrite:
        if path.read_bytes() == data:
            return
        raise OutputExistsError(
            f"{path} already exists and is not the synthetic case's file; pass overwrite=True to "
            "replace it, or write the case into an empty folder"
        )
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)


def _write_ct(folder: Path, p: dict, overwrite: bool = False) -> list[Dataset]:
    hu, _, _ = _ct_slices(p)
    out = []
    for k in range(p["shape"][0]):
        ds = Dataset()
        uid = _uid(f"ct-{k}")
        _base(ds, "1.2.840.10008.5.1.4.1.1.2", uid, "CT", "ct-series", 1)
        ds.SeriesDescription = "Planning CT"
        ds.FrameOfReferenceUID = _uid("frame")
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Laterality = ""
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        z = p["origin"][2] + k * p["slice_spacing"]
        ds.ImagePositionPatient = [p["origin"][0], p["origin"][1], z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = z
        ds.SliceThickness = p["slice_spacing"]
        ds.PixelSpacing = list(p["pixel_spacing"])
        ds.Rows, ds.Columns = p["shape"][1], p["shape"][2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.KVP = 120
        ds.PixelData = (hu[k] + 1024).astype(np.uint16).tobytes()
        _write(ds, folder / f"CT{k + 1:03d}.dcm", overwrite)
        out.append(ds)
    return out


def _polygon(center, axes, n=72) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([center[0] + axes[0] * np.cos(t), center[1] + axes[1] * np.sin(t)], axis=1)


def _structures(p: dict) -> list[tuple[str, tuple[int, int, int], str, list[tuple[float, np.ndarray]]]]:
    """(name, colour, type, [(z, polygon xy)]) for every ROI, on the CT slice planes."""
    z = p["origin"][2] + p["slice_spacing"] * np.arange(p["shape"][0])
    rois = [("BODY", (0, 255, 0), "EXTERNAL", [(zk, _polygon(p["body"]["center"], p["body"]["axes"])) for zk in z])]
    for name, lung in p["lungs"].items():
        planes = [(zk, _polygon(lung["center"], lung["axes"])) for zk in z if lung["z"][0] <= zk <= lung["z"][1]]
        rois.append((name, (0, 128, 255) if name.endswith("L") else (0, 200, 200), "ORGAN", planes))
    s = p["spine"]
    rois.append(("Spine", (255, 255, 0), "ORGAN", [(zk, _polygon(s["center"], (s["radius"],) * 2)) for zk in z]))
    c, r = p["ptv"]["center"], p["ptv"]["radius"]
    planes = []
    for zk in z:
        h = r * r - (zk - c[2]) ** 2
        if h > 1.0:
            planes.append((zk, _polygon(c[:2], (np.sqrt(h),) * 2)))
    rois.append(("PTV", (255, 0, 0), "PTV", planes))
    return rois


def _write_rtstruct(folder: Path, p: dict, cts: list[Dataset], overwrite: bool = False) -> Dataset:
    ds = Dataset()
    _base(ds, "1.2.840.10008.5.1.4.1.1.481.3", _uid("rtstruct"), "RTSTRUCT", "rtstruct-series", 2)
    ds.SeriesDescription = "Structures"
    ds.FrameOfReferenceUID = cts[0].FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "RTKIT_DEMO"
    ds.StructureSetName = "rtkit demo structures"
    ds.StructureSetDate, ds.StructureSetTime = "20260101", "120000"
    ds.InstanceNumber = 1
    contour_images = Sequence()
    by_z = {}
    for ct in cts:
        contour_images.append(_ref(ct))
        by_z[round(float(ct.ImagePositionPatient[2]), 3)] = ct
    series = Dataset()
    series.SeriesInstanceUID = cts[0].SeriesInstanceUID
    series.ContourImageSequence = contour_images
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = cts[0].StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = cts[0].FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    rois, contours, observations = Sequence(), Sequence(), Sequence()
    for number, (name, color, kind, planes) in enumerate(_structures(p), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = cts[0].FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ROIDisplayColor = list(color)
        rc.ReferencedROINumber = number
        seq = Sequence()
        for zk, xy in planes:
            c = Dataset()
            c.ContourImageSequence = Sequence([_ref(by_z[round(float(zk), 3)])])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(xy)
            pts = np.column_stack([xy, np.full(len(xy), zk)])
            c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
            seq.append(c)
        rc.ContourSequence = seq
        contours.append(rc)
        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = kind
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    _write(ds, folder / "RS.dcm", overwrite)
    return ds


def _write_rtplan(folder: Path, p: dict, rs: Dataset, frame_uid: str, overwrite: bool = False) -> Dataset:
    ds = Dataset()
    _base(ds, "1.2.840.10008.5.1.4.1.1.481.5", _uid("rtplan"), "RTPLAN", "rtplan-series", 3)
    ds.SeriesDescription = "Plan"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.RTPlanLabel = "DEMO_4F"
    ds.RTPlanName = "rtkit demo 4-field box"
    ds.RTPlanDate, ds.RTPlanTime = "20260101", "120000"
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = Sequence([_ref(rs)])
    rx = Dataset()
    rx.DoseReferenceNumber = 1
    rx.DoseReferenceUID = _uid("doseref")
    rx.DoseReferenceStructureType = "VOLUME"
    rx.ReferencedROINumber = 5
    rx.DoseReferenceDescription = "PTV"
    rx.DoseReferenceType = "TARGET"
    rx.TargetPrescriptionDose = p["prescription_gy"]
    ds.DoseReferenceSequence = Sequence([rx])
    angles = [0.0, 90.0, 180.0, 270.0]
    mus = [52.5, 48.0, 51.0, 47.5]
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = p["fractions"]
    fg.NumberOfBeams = len(angles)
    fg.NumberOfBrachyApplicationSetups = 0
    refbeams = Sequence()
    beams = Sequence()
    for n, (angle, mu) in enumerate(zip(angles, mus, strict=True), start=1):
        rb = Dataset()
        rb.ReferencedBeamNumber = n
        rb.BeamMeterset = mu
        rb.BeamDose = p["prescription_gy"] / p["fractions"] / len(angles)
        refbeams.append(rb)
        b = Dataset()
        b.BeamNumber = n
        b.BeamName = f"G{int(angle):03d}"
        b.BeamType = "STATIC"
        b.RadiationType = "PHOTON"
        b.TreatmentMachineName = "LINAC"
        b.PrimaryDosimeterUnit = "MU"
        b.SourceAxisDistance = 1000.0
        b.TreatmentDeliveryType = "TREATMENT"
        b.NumberOfWedges = b.NumberOfCompensators = b.NumberOfBoli = b.NumberOfBlocks = 0
        b.FinalCumulativeMetersetWeight = 1.0
        b.NumberOfControlPoints = 2
        devices = Sequence()
        for kind in ("ASYMX", "ASYMY"):
            dev = Dataset()
            dev.RTBeamLimitingDeviceType = kind
            dev.NumberOfLeafJawPairs = 1
            devices.append(dev)
        b.BeamLimitingDeviceSequence = devices
        cps = Sequence()
        for i, w in enumerate((0.0, 1.0)):
            cp = Dataset()
            cp.ControlPointIndex = i
            cp.CumulativeMetersetWeight = w
            if i == 0:
                cp.NominalBeamEnergy = 6.0
                cp.GantryAngle = angle
                cp.GantryRotationDirection = "NONE"
                cp.BeamLimitingDeviceAngle = 0.0
                cp.BeamLimitingDeviceRotationDirection = "NONE"
                cp.PatientSupportAngle = 0.0
                cp.PatientSupportRotationDirection = "NONE"
                cp.IsocenterPosition = list(p["ptv"]["center"])
                pos = Sequence()
                for kind in ("ASYMX", "ASYMY"):
                    jp = Dataset()
                    jp.RTBeamLimitingDeviceType = kind
                    jp.LeafJawPositions = [-25.0, 25.0]
                    pos.append(jp)
                cp.BeamLimitingDevicePositionSequence = pos
            cps.append(cp)
        b.ControlPointSequence = cps
        beams.append(b)
    fg.ReferencedBeamSequence = refbeams
    ds.FractionGroupSequence = Sequence([fg])
    ds.BeamSequence = beams
    ds.ApprovalStatus = "UNAPPROVED"
    _write(ds, folder / "RP.dcm", overwrite)
    return ds


def _write_rtdose(folder: Path, p: dict, plan: Dataset, frame_uid: str, overwrite: bool = False) -> Dataset:
    ds = Dataset()
    _base(ds, "1.2.840.10008.5.1.4.1.1.481.2", _uid("rtdose"), "RTDOSE", "rtdose-series", 4)
    ds.SeriesDescription = "Dose"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ns, nr, nc = p["dose_shape"]
    dr, dc = p["dose_pixel_spacing"]
    dz = p["slice_spacing"]
    origin = np.array([-dc * (nc - 1) / 2, -dr * (nr - 1) / 2, -dz * (ns - 1) / 2])
    x = origin[0] + dc * np.arange(nc)
    y = origin[1] + dr * np.arange(nr)
    z = origin[2] + dz * np.arange(ns)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    dose = analytical_dose(np.stack([xx, yy, zz], axis=-1))
    scaling = float(dose.max()) / 60000.0
    ds.ImagePositionPatient = [float(v) for v in origin]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [dr, dc]
    ds.SliceThickness = dz
    ds.GridFrameOffsetVector = [float(v) for v in z - z[0]]
    ds.FrameIncrementPointer = 0x3004000C
    ds.NumberOfFrames = ns
    ds.Rows, ds.Columns = nr, nc
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = f"{scaling:.10g}"
    ds.ReferencedRTPlanSequence = Sequence([_ref(plan)])
    ds.PixelData = np.round(dose / float(ds.DoseGridScaling)).astype(np.uint32).tobytes()
    _write(ds, folder / "RD.dcm", overwrite)
    return ds


def synthetic_case(path: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
    """Write the built-in synthetic planning case and return its folder.

    Parameters
    ----------
    path : path-like, optional
        Folder to write into (created if needed).  Default: a new temporary folder.
    overwrite : bool
        Replace files of the same names that differ from the case's.  Without
        it such a file raises :class:`~rtkit.errors.OutputExistsError` (files
        identical to the case's are left as they are, so writing the case
        twice into one folder is fine).  Each file is written atomically.

    Returns
    -------
    Path
        The folder, holding ``CT001.dcm`` ... ``CT040.dcm`` (64 x 64 px,
        4 mm pixels, 3 mm slices, HFS), ``RS.dcm``, ``RP.dcm`` and ``RD.dcm``
        (5 mm x 5 mm x 3 mm dose grid, Gy).  The UIDs are deterministic.

    Examples
    --------
    >>> import rtkit
    >>> case = rtkit.load(rtkit.datasets.synthetic_case())
    >>> case.ct.grid.shape
    (40, 64, 64)
    """
    folder = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="rtkit-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    p = PHANTOM
    cts = _write_ct(folder, p, overwrite)
    rs = _write_rtstruct(folder, p, cts, overwrite)
    plan = _write_rtplan(folder, p, rs, cts[0].FrameOfReferenceUID, overwrite)
    _write_rtdose(folder, p, plan, cts[0].FrameOfReferenceUID, overwrite)
    return folder
