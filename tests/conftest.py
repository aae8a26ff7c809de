"""Shared fixtures: the real test data location and a synthetic-series factory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from builders import SeriesTruth, write_image_series

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real DICOM test data (``$RTKIT_TEST_DATA``, default ``<repo>/../shared/data``).

    Skips the test when absent, except on CI (``CI=true``) where a missing
    data folder is an error.
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
    return path


@pytest.fixture
def tmp_series(tmp_path: Path) -> Callable[..., SeriesTruth]:
    """A factory: ``tmp_series(subfolder="ct", **write_image_series_kwargs) -> SeriesTruth``."""
    counter = iter(range(10**6))

    def make(subfolder: str | None = None, **kwargs) -> SeriesTruth:
        folder = tmp_path / (subfolder or f"series{next(counter)}")
        return write_image_series(folder, **kwargs)

    return make
