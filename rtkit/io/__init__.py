"""Reading DICOM: folder scanning, series assembly, case linking."""

from .case import Case, load
from .rtdose import read_dose
from .rtplan import read_plan
from .rtstruct import read_structures
from .scan import Index, Patient, Series, Study, scan
from .series import read_image

__all__ = ["Case", "Index", "Patient", "Series", "Study", "load", "read_dose", "read_image", "read_plan", "read_structures", "scan"]
