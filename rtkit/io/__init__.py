"""Reading DICOM: folder scanning, series assembly, case linking."""

from .case import Case, load
from .scan import Index, Patient, Series, Study, scan
from .series import read_image

__all__ = ["Case", "Index", "Patient", "Series", "Study", "load", "read_image", "scan"]
