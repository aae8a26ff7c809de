"""The documentation site builds in strict mode, and its API reference covers DESIGN.md.

``mkdocs build --strict`` (warnings are errors: broken links, missing pages,
docstrings mkdocstrings cannot parse) into ``tmp_path``; then every public
name that the API contract (``../shared/DESIGN.md``, sections 1-9) writes in
backticks must be an object in the built API reference, and every
subcommand it names must be in the generated CLI reference.

How names are read from DESIGN.md: each bullet or paragraph is scanned for
code spans.  A span's leading dotted name (``rtkit.`` removed) is checked
when it is a name and not an expression (``dvh["D95%"]``, ``unit="cc"`` and
tuples are skipped).  A span followed by a colon (```DVH`:``,
```rtkit.plot`:``) and ``rtkit.f(...) -> Class`` set the owner for the bare
attribute names that follow in the same bullet
(``Grid(...)``: ``spacing``, ``origin`` ... are checked as ``Grid.spacing``
and so on; ``.failures`` as ``CohortResult.failures``).  A bare name is found
as ``Owner.name`` or, failing that, as any documented object of that name.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DESIGN_CANDIDATES = [REPO.parent / "shared" / "DESIGN.md"]
if os.environ.get("RTKIT_TEST_DATA"):
    DESIGN_CANDIDATES.insert(0, Path(os.environ["RTKIT_TEST_DATA"]).resolve().parent / "DESIGN.md")

# Code spans in DESIGN.md sections 1-9 that are not rtkit API names, and why.
NOT_API = {
    "skimage.measure.find_contours": "scikit-image's function, named as the method",
    "dask.distributed": "the Dask package",
}
# In the bullet that names CohortResult.rows, these spans are the keys of its row dicts, not attributes.
ROW_KEYS = {"case", "patient_id", "structure", "metric", "value", "unit"}

_NAME = re.compile(r"^\.?(?:rtkit\.)?([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")


def design_path() -> Path:
    for p in DESIGN_CANDIDATES:
        if p.is_file():
            return p
    msg = f"DESIGN.md not found at {[str(p) for p in DESIGN_CANDIDATES]}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def design_items(text: str) -> list[str]:
    """Bullets and paragraphs of sections 1-9 (section 10 on is layout and reading advice)."""
    body = text.split("\n## 10.")[0]
    items: list[str] = []
    for block in re.split(r"\n\s*\n", body):
        parts = re.split(r"\n(?=- )", block)
        items.extend(" ".join(p.split()) for p in parts if p.strip() and not p.lstrip().startswith("#"))
    return items


def design_names(text: str) -> tuple[list[tuple[str, str | None, str]], list[str]]:
    """``[(name, owner, span)]`` to find in the API reference, and the CLI subcommands named."""
    names: list[tuple[str, str | None, str]] = []
    commands: list[str] = []
    for item in design_items(text):
        owner = None
        in_commands = "subcommands" in item
        skip = ROW_KEYS if "CohortResult.rows" in item else set()
        for found in re.finditer(r"`([^`]+)`(:?)", item):
            span, defines = found.group(1), bool(found.group(2))
            cli = re.fullmatch(r"rtkit ([a-z]+)(?: .*)?", span)
            if cli:
                commands.append(cli.group(1))
                continue
            if in_commands and re.fullmatch(r"[a-z]+", span) and span != "rtkit":
                commands.append(span)
                continue
            m = _NAME.match(span)
            if not m:
                continue
            name, rest = m.group(1), span[m.end():]
            if rest and not (rest.startswith("(") or rest.startswith(" ->") or rest.startswith(" |")):
                continue  # an expression: dvh["D95%"], unit="cc", "rtkit demo" ...
            if span in NOT_API or name in NOT_API or name in skip:
                continue
            last = name.split(".")[-1]
            if span.startswith("."):
                names.append((name, owner, span))
                continue
            if "." not in name and not span.startswith("rtkit.") and not last[0].isupper() and owner:
                names.append((name, owner, span))  # an attribute of the current owner
                continue
            names.append((name, None, span))
            ret = re.search(r"->\s*([A-Z]\w*)", rest)
            if span.startswith("rtkit.") and ret:
                owner = ret.group(1)  # rtkit.gamma(...) -> GammaResult (`array`, ...)
            elif defines:
                owner = last  # `DVH`: ..., `rtkit.Grid(...)`: ..., `rtkit.plot`: `show_slice(...)`
    return names, commands


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by ``mkdocs build --strict`` (mkdocs and mkdocstrings are in the test extra)."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "-f",
                           str(REPO / "mkdocs.yml"), "-d", str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    return out


def documented_ids(site: Path) -> set[str]:
    ids = set()
    for page in (site / "api").rglob("*.html"):
        ids.update(re.findall(r'id="(rtkit(?:\.\w+)*)"', page.read_text(encoding="utf-8")))
    return ids


def test_design_parser_reads_the_contract() -> None:
    names, commands = design_names(design_path().read_text(encoding="utf-8"))
    flat = {(n, o) for n, o, _ in names}
    # a few spans of each kind, so a change in DESIGN.md's layout cannot silently empty the check
    for expected in [("Grid", None), ("spacing", "Grid"), ("load", None), ("ct", "Case"), ("_repr_html_", "Case"),
                     ("Index.cases", None), ("DVH.outside_volume_cc", None), ("failures", "CohortResult"),
                     ("config.strict", None), ("cohort.run", None), ("show_slice", "plot"), ("pass_rate", "GammaResult")]:
        assert expected in flat, expected
    assert {"info", "dvh", "masks", "register", "gamma", "cohort", "demo"} <= set(commands)
    assert len(names) > 120


def test_docs_build_strict_and_cover_design(site: Path) -> None:
    ids = documented_ids(site)
    short = {(i.split(".", 1)[1] if "." in i else i).lower() for i in ids}
    names, commands = design_names(design_path().read_text(encoding="utf-8"))

    def found(name: str, owner: str | None) -> bool:
        # case-insensitive, so that `grid.shape` (an Image's grid) is found as Grid.shape
        targets = [f"{owner}.{name}".lower(), name.lower()] if owner else [name.lower()]
        return any(s == t or s.endswith("." + t) for t in targets for s in short)

    missing = sorted({f"{o + '.' if o else ''}{n}  (from `{span}`)" for n, o, span in names if not found(n, o)})
    assert not missing, "DESIGN.md names missing from the API reference:\n  " + "\n  ".join(missing)
    cli = (site / "cli-reference" / "index.html").read_text(encoding="utf-8")
    for c in sorted(set(commands)):
        assert f"rtkit {c}</code>" in cli, f"rtkit {c} missing from the CLI reference"


def test_site_pages_and_accuracy_tables(site: Path) -> None:
    for page in ("install", "tour", "concepts", "cli", "cli-reference", "citing", "benchmarks", "api"):
        assert (site / page / "index.html").is_file(), page
    concepts = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    # the accuracy figures on the concepts page are those of benchmarks/RESULTS.md
    results = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    for roi, vol in (("Breast", "400.592"), ("Heart", "440.552"), ("Lt Lung", "2007.907"), ("BODY", "14885.898")):
        assert vol in concepts and re.search(rf"{re.escape(roi)}\s+rtkit\s+{re.escape(vol)}", results), roi
    row = re.search(r"^D95\s+(\S+)\s+0\s", results, re.M)
    assert row and row.group(1).replace("/", " / ") in concepts
    # the benchmark page is RESULTS.md and links to it resolve to that page
    assert "Benchmark results" in (site / "benchmarks" / "index.html").read_text(encoding="utf-8")


def test_tour_code_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tour's first five code blocks (the synthetic case, no data needed) run as written."""
    import warnings

    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import rtkit

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs" / "tour.md").read_text(encoding="utf-8"), re.S)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rtkit.RTKitWarning)
        exec(compile("\n".join(blocks[:5]), "tour.md", "exec"), ns)  # noqa: S102
    assert ns["g"].shape == ns["ct"].array.shape and (tmp_path / "dvh.csv").is_file()
    assert ns["h"]["D95%"] == ns["h"].dose_at(95)
