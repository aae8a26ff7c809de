"""Notebook HTML summaries (``_repr_html_``) of Case, StructureSet, Plan, DVHSet and Registration.

Issue 9 item 2.  Each summary is checked on content the test builds itself:
one table row per object, values as written into the DICOM, hostile text
escaped, and well-formed markup (every tag closed, in order).
"""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from _cases import clone_case

import rtkit

HOSTILE = 'A<b>&"x'


class _Balance(HTMLParser):
    """Fails on a closing tag that does not close the innermost open one; lists text cells."""

    VOID = {"br", "img", "hr", "meta"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.cells: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()
        if tag == "td" and self._cell is not None:
            self.cells.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> _Balance:
    p = _Balance()
    p.feed(text)
    p.close()
    assert not p.stack, f"unclosed tags: {p.stack}"
    return p


@pytest.fixture(scope="module")
def hostile_case(tmp_path_factory) -> Path:
    """The synthetic case with a series description, plan label and ROI name that need escaping."""

    def edit(name: str, ds) -> None:
        if name.startswith("CT"):
            ds.SeriesDescription = HOSTILE
        elif name.startswith("RP"):
            ds.RTPlanLabel = HOSTILE
            ds.BeamSequence[0].BeamName = "<i>beam</i>"
        elif name.startswith("RS"):
            ds.StructureSetROISequence[0].ROIName = HOSTILE

    return clone_case(tmp_path_factory.mktemp("html") / "case", patient_id="HTML-1", edit=edit)


def test_case_html(hostile_case: Path) -> None:
    case = rtkit.load(hostile_case)
    text = case._repr_html_()
    assert text.startswith("<div><b>rtkit Case</b>") and text.endswith("</div>")
    assert "<b>&" not in text and "A&lt;b&gt;&amp;&quot;x" in text
    p = parse(text)
    n_rt = sum(1 for f in hostile_case.iterdir() if not f.name.startswith("CT"))
    assert text.count("<tr>") == 1 + 1 + n_rt  # header, the CT series, RTSTRUCT/RTPLAN/RTDOSE
    assert HOSTILE in p.cells  # unescaped back by the parser: the text survives intact
    for modality in ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE"):
        assert modality in p.cells
    assert f"{len([f for f in hostile_case.iterdir() if f.name.startswith('CT')])} files" in p.cells


def test_plan_html(hostile_case: Path) -> None:
    plan = rtkit.load(hostile_case).plan
    text = plan._repr_html_()
    assert text.startswith("<div><b>rtkit RT Plan</b>") and "<i>" not in text
    p = parse(text)
    assert text.count("<tr>") == len(plan.beams) + 1
    rows = [p.cells[i:i + 11] for i in range(0, len(p.cells), 11)]
    assert len(rows) == len(plan.beams)
    for row, beam in zip(rows, plan.beams, strict=True):
        assert row[0] == str(beam.number) and row[1] == (beam.name or "")[:20]
        assert row[9] == str(len(beam.control_points))
        if beam.monitor_units is not None:
            assert float(row[5]) == pytest.approx(beam.monitor_units, abs=0.051)
    assert rows[0][1] == "<i>beam</i>"
    assert "A&lt;b&gt;&amp;&quot;x" in text


def test_structure_set_and_dvhset_html(hostile_case: Path) -> None:
    case = rtkit.load(hostile_case)
    ss = case.structures
    text = ss._repr_html_()
    p = parse(text)
    assert text.count("<tr>") == len(ss.names) + 1 and HOSTILE in p.cells and "A<b>" not in text
    for name in ss.names:
        assert f"rgb({','.join(str(int(c)) for c in ss[name].color)})" in text
        assert f"{ss[name].volume:.2f}" in p.cells
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        sets = rtkit.dvhs(case.dose, ss, names=["PTV", HOSTILE])
    text = sets._repr_html_()
    p = parse(text)
    assert HOSTILE in p.cells and "A<b>" not in text
    width = 3 + len(rtkit.DVHSet.HTML_METRICS)
    rows = {r[0]: r for r in (p.cells[i:i + width] for i in range(0, len(p.cells), width))}
    ptv = sets["PTV"]
    assert rows["PTV"][1] == f"{ptv.volume_cc:.3f}" and rows["PTV"][2] == f"{ptv.outside_volume_cc:.3f}"
    heads = re.findall(r"<th>([^<]*)</th>", text)
    assert rows["PTV"][heads.index("D95% (Gy)")] == f"{ptv.dose_at(95):.2f}"
    assert float(rows[HOSTILE][2]) > 0  # the body runs outside the dose grid: reported, not hidden


def test_registration_html() -> None:
    a = np.radians(10.0)
    m = np.eye(4)
    m[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    m[:3, 3] = (4.0, -5.5, 12.25)
    reg = rtkit.Registration(m, metric=0.5, metric_name="mi", method="rigid")
    text = reg._repr_html_()
    p = parse(text)
    assert text.startswith("<div><b>rtkit Registration</b>")
    numbers = [float(c) for c in p.cells if re.fullmatch(r"-?\d+(\.\d+)?", c)]
    for v in m[:3].ravel():
        assert any(abs(v - x) < 5e-4 for x in numbers), v


def test_every_summary_is_an_ipython_rich_repr(hostile_case: Path) -> None:
    """Jupyter calls ``_repr_html_`` with no arguments and wants a str: the five kinds provide it."""
    case = rtkit.load(hostile_case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        sets = rtkit.dvhs(case.dose, case.structures, names=["PTV"])
    objects = [case, case.structures, case.plan, sets, rtkit.Registration(np.eye(4))]
    for obj in objects:
        text = type(obj)._repr_html_(obj)
        assert isinstance(text, str) and text.startswith("<div><b>rtkit ")
        parse(text)
