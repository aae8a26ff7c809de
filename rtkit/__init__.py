"""rtkit: radiotherapy DICOM-RT analysis with exact geometry.

The public API is listed in ``__all__``; see ``docs/`` and DESIGN.md.
"""

import logging as _logging

from . import cohort, config, datasets, plot
from .dose import Dose, sum_doses
from .dvh import DVH, DVHSet, dvh, dvhs
from .errors import (
    AmbiguousCaseError,
    DicomReadError,
    FrameOfReferenceError,
    GeometryError,
    MetricError,
    MissingDependencyError,
    RegistrationError,
    RTKitError,
    RTKitWarning,
)
from .gamma import GammaResult, gamma
from .geometry import Grid
from .image import Image
from .indices import gradient_index, homogeneity_index, paddick_ci, rtog_ci
from .io import (
    Case,
    Index,
    Patient,
    Series,
    Study,
    load,
    read_dose,
    read_image,
    read_plan,
    read_structures,
    scan,
)
from .pet import suv
from .plan import Beam, ControlPoint, DoseReference, FractionGroup, Plan
from .registration import Registration, read_registration, register
from .structures import Contour, Structure, StructureSet

__version__ = "0.1.0.dev0"

_logging.getLogger(__name__).addHandler(_logging.NullHandler())

__all__ = [
    "AmbiguousCaseError",
    "Beam",
    "Case",
    "Contour",
    "ControlPoint",
    "DicomReadError",
    "DVH",
    "DVHSet",
    "Dose",
    "DoseReference",
    "FractionGroup",
    "FrameOfReferenceError",
    "GammaResult",
    "GeometryError",
    "Grid",
    "Image",
    "Index",
    "MetricError",
    "MissingDependencyError",
    "Patient",
    "Plan",
    "RTKitError",
    "RTKitWarning",
    "Registration",
    "RegistrationError",
    "Series",
    "Structure",
    "StructureSet",
    "Study",
    "cohort",
    "config",
    "datasets",
    "dvh",
    "dvhs",
    "gamma",
    "gradient_index",
    "homogeneity_index",
    "paddick_ci",
    "plot",
    "rtog_ci",
    "load",
    "read_dose",
    "read_image",
    "read_plan",
    "read_registration",
    "read_structures",
    "register",
    "scan",
    "sum_doses",
    "suv",
]
