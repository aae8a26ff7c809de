"""Shared fixtures: the real test data location, a synthetic-series factory, the
reading mode (lenient/strict) and the guard that no reader modifies its input.

* ``reading_mode`` (autouse): sets ``rtkit.config.strict`` for the test and
  restores it afterwards.  Tests marked ``@pytest.mark.both_modes`` (or whole
  modules, with ``pytestmark``) run twice, ``[lenient]`` and ``[strict]``.
* ``_inputs_never_modified`` (autouse): every file an rtkit reader opens
  (``open_dataset``, ``pydicom.pixels.iter_pixels``) must have the same
  SHA-256 after the call as before it; the real data tree is hashed once at
  the start of the session and compared at its end.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from builders import SeriesTruth, file_hashes, write_image_series

import rtkit

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    """The real DICOM test data (``$RTKIT_TEST_DATA``, default ``<repo>/../shared/data``).

    Skips the test when absent, except on CI (``CI=true``) where a missing
    data folder is an error.  The whole tree is hashed on first use and again
    at the end of the session: a test run must leave it byte for byte as it was.
    """
    env = os.environ.get("RTKIT_TEST_DATA")
    path = Path(env) if env else DEFAULT_DATA
    path = path.resolve()
    if not path.is_dir():
        msg = (
            f"real DICOM test data not found at {path}; set RTKIT_TEST_DATA to the folder "
            "holding it (see ../shared/data/README.md)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    before = file_hashes(path)
    yield path
    after = file_hashes(path)
    changed = sorted(str(p) for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"the test session modified, added or removed real data files: {changed[:10]}"


@pytest.fixture
def tmp_series(tmp_path: Path) -> Callable[..., SeriesTruth]:
    """A factory: ``tmp_series(subfolder="ct", **write_image_series_kwargs) -> SeriesTruth``."""
    counter = iter(range(10**6))

    def make(subfolder: str | None = None, **kwargs) -> SeriesTruth:
        folder = tmp_path / (subfolder or f"series{next(counter)}")
        return write_image_series(folder, **kwargs)

    return make


# ------------------------------------------------------------------ reading modes
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "both_modes: run the test with rtkit.config.strict False and True"
    )
    config.addinivalue_line("markers", "no_input_guard: do not wrap readers with the input-hash guard")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_modes") and "reading_mode" in metafunc.fixturenames:
        metafunc.parametrize("reading_mode", ["lenient", "strict"], indirect=True)


@pytest.fixture(autouse=True)
def reading_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """``"lenient"`` (default) or ``"strict"``: ``rtkit.config.strict`` during the test.

    ``RTKIT_READING_MODE=strict`` makes strict the default for unmarked tests.
    """
    mode = getattr(request, "param", os.environ.get("RTKIT_READING_MODE", "lenient"))
    saved = rtkit.config.strict
    rtkit.config.strict = mode == "strict"
    try:
        yield mode
    finally:
        rtkit.config.strict = saved


# ------------------------------------------------------------------ inputs never modified
def _digest(path: object) -> str | None:
    try:
        return hashlib.sha256(Path(os.fspath(path)).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return None


def guard_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap rtkit's file readers so that each call hashes its file before and after.

    Returns the list that collects the paths whose bytes a read changed.
    """
    import pydicom.pixels

    from rtkit.io import _dicom

    modified: list[str] = []
    original_open = _dicom.open_dataset

    def guarded_open(path, *args, **kwargs):
        before = _digest(path)
        try:
            return original_open(path, *args, **kwargs)
        finally:
            if before is not None and _digest(path) != before:
                modified.append(str(path))

    for name, mod in list(sys.modules.items()):
        if name.startswith("rtkit") and getattr(mod, "open_dataset", None) is original_open:
            monkeypatch.setattr(mod, "open_dataset", guarded_open)
    original_iter = pydicom.pixels.iter_pixels

    def guarded_iter(src, *args, **kwargs):
        before = _digest(src)
        try:
            yield from original_iter(src, *args, **kwargs)
        finally:
            if before is not None and _digest(src) != before:
                modified.append(str(src))

    monkeypatch.setattr(pydicom.pixels, "iter_pixels", guarded_iter)
    return modified


@pytest.fixture(autouse=True)
def _inputs_never_modified(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if any rtkit read changes the bytes of the file it reads.

    ``@pytest.mark.no_input_guard`` turns it off (only for the test of the guard itself).
    """
    if request.node.get_closest_marker("no_input_guard"):
        yield
        return
    modified = guard_reads(monkeypatch)
    yield
    assert not modified, f"rtkit modified the input file(s) it read: {sorted(set(modified))}"
