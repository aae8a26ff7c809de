"""Helpers shared by the benchmark scripts: machine facts and the rtkit source identity."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import pydicom

import rtkit


def sources_id() -> str:
    """Git revision of the rtkit sources, plus a hash of them (they may be uncommitted)."""
    pkg = Path(rtkit.__file__).resolve().parent
    h = hashlib.sha1()
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())
    try:
        rev = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        rev, dirty = "", ""
    return f"git {rev or 'none'}{' + local changes' if dirty else ''}, sources sha1 {h.hexdigest()[:12]}"


def machine_facts(extra_versions: str = "") -> list[str]:
    """Date, CPU, OS, Python, library versions and rtkit's source identity, one per line."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = f"numpy:    {np.__version__}, pydicom: {pydicom.__version__}"
    return [
        f"date:     {now}",
        f"cpu:      {cpu}, {os.cpu_count()} logical cores ({usable} usable)",
        f"os:       {platform.system()} {platform.release()}",
        f"python:   {platform.python_version()} ({platform.python_implementation()})",
        versions + (f", {extra_versions}" if extra_versions else ""),
        f"rtkit:    {rtkit.__version__} ({sources_id()})",
    ]


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"
