"""A starter map of common local structure names to AAPM TG-263 standard names.

Keys are TG-263 standard names (AAPM Report 263, 2018); values are aliases
seen in clinical exports.  An alias is compared case-insensitively with runs
of spaces, underscores and hyphens treated as one space; an alias written
``re:<pattern>`` is a regular expression matched against the whole local name
(case-insensitive).  :class:`rtkit.cohort.StructureMap` consults this map
after the user's own entries; pass ``builtin=False`` to do without it.

The map is deliberately conservative: it holds names whose meaning is not in
doubt (laterality spelled out or abbreviated, plural forms), not
institution-specific abbreviations such as ``SC`` or ``Cord+5``.
"""

from __future__ import annotations

__all__ = ["STARTER_MAP"]

# side patterns: "left"/"lt"/"l" and "right"/"rt"/"r", before or after the organ
_L = r"(?:left|lt|l)"
_R = r"(?:right|rt|r)"
_S = r"[\s_\-.]*"


def _paired(organ: str, *extra_aliases: str) -> tuple[list[str], list[str]]:
    """Regex aliases of the left and right ``organ`` (a regex fragment)."""
    left = [f"re:{_L}{_S}{organ}|{organ}{_S}{_L}", *(a.format(side="L") for a in extra_aliases)]
    right = [f"re:{_R}{_S}{organ}|{organ}{_S}{_R}", *(a.format(side="R") for a in extra_aliases)]
    return left, right


_lung = _paired("lung")
_kidney = _paired("kidney")
_parotid = _paired("parotid(?:gland)?")
_femur = _paired(f"fem(?:ur|oral)?{_S}head", "FemoralHead_{side}")
_eye = _paired("(?:eye|globe)")
_lens = _paired("lens")
_optic = _paired(f"optic{_S}(?:nerve|nrv)")
_cochlea = _paired("cochlea")
_brachial = _paired(f"brachial{_S}plexus")
_breast = _paired("breast")
_submand = _paired(f"submand(?:ibular)?(?:{_S}gland)?")

#: TG-263 name -> aliases (plain strings or ``re:`` patterns).
STARTER_MAP: dict[str, list[str]] = {
    "Lung_L": ["Lt Lung", "Left Lung", "Lung Left", "Lung Lt", "LLung", *_lung[0]],
    "Lung_R": ["Rt Lung", "Right Lung", "Lung Right", "Lung Rt", "RLung", *_lung[1]],
    "Lungs": ["Lung Total", "Total Lung", "Lungs Total", "Both Lungs", "Bilat Lungs", "Lung Both",
              "Lungs-GTV", "re:lungs?" + _S + "(?:total|both|bilat(?:eral)?)"],
    "Heart": ["Heart", "Cor"],
    "SpinalCord": ["Spinal Cord", "Cord", "Spinal_Cord"],
    "Esophagus": ["Oesophagus", "Esophagus", "Oesophagus Whole"],
    "Brainstem": ["Brain Stem", "BrainStem", "Brain_Stem"],
    "Brain": ["Brain"],
    "Liver": ["Liver"],
    "Stomach": ["Stomach"],
    "Duodenum": ["Duodenum"],
    "Bowel_Small": ["Small Bowel", "SmallBowel", "Bowel Small", "Small Intestine"],
    "Bowel_Large": ["Large Bowel", "LargeBowel", "Bowel Large", "Colon"],
    "Bladder": ["Urinary Bladder", "Bladder"],
    "Rectum": ["Rectum"],
    "Prostate": ["Prostate"],
    "Kidney_L": ["Lt Kidney", "Left Kidney", *_kidney[0]],
    "Kidney_R": ["Rt Kidney", "Right Kidney", *_kidney[1]],
    "Kidneys": ["Both Kidneys", "Kidneys Total", "Kidney Both"],
    "Parotid_L": ["Lt Parotid", "Left Parotid", *_parotid[0]],
    "Parotid_R": ["Rt Parotid", "Right Parotid", *_parotid[1]],
    "Glnd_Submand_L": ["Lt Submandibular", *_submand[0]],
    "Glnd_Submand_R": ["Rt Submandibular", *_submand[1]],
    "Femur_Head_L": ["Lt Femoral Head", "Left Femoral Head", *_femur[0]],
    "Femur_Head_R": ["Rt Femoral Head", "Right Femoral Head", *_femur[1]],
    "Eye_L": ["Lt Eye", "Left Eye", "Globe L", *_eye[0]],
    "Eye_R": ["Rt Eye", "Right Eye", "Globe R", *_eye[1]],
    "Lens_L": ["Lt Lens", "Left Lens", *_lens[0]],
    "Lens_R": ["Rt Lens", "Right Lens", *_lens[1]],
    "OpticNrv_L": ["Lt Optic Nerve", "Left Optic Nerve", *_optic[0]],
    "OpticNrv_R": ["Rt Optic Nerve", "Right Optic Nerve", *_optic[1]],
    "OpticChiasm": ["Chiasm", "Optic Chiasm", "Chiasma"],
    "Cochlea_L": ["Lt Cochlea", "Left Cochlea", *_cochlea[0]],
    "Cochlea_R": ["Rt Cochlea", "Right Cochlea", *_cochlea[1]],
    "BrachialPlex_L": ["Lt Brachial Plexus", *_brachial[0]],
    "BrachialPlex_R": ["Rt Brachial Plexus", *_brachial[1]],
    "Breast_L": ["Lt Breast", "Left Breast", *_breast[0]],
    "Breast_R": ["Rt Breast", "Right Breast", *_breast[1]],
    "Mandible": ["Mandible", "Jaw"],
    "Larynx": ["Larynx"],
    "Pharynx": ["Pharynx"],
    "OralCavity": ["Oral Cavity", "Mouth"],
    "Trachea": ["Trachea"],
    "Bronchus": ["Bronchus"],
    "Pancreas": ["Pancreas"],
    "Spleen": ["Spleen"],
    "Cauda_Equina": ["Cauda Equina", "CaudaEquina"],
    "External": ["BODY", "External", "Skin", "Outline", "Body Contour", "Patient"],
}
