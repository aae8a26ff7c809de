"""Helpers shared by the benchmark scripts: machine facts and the rtkit source identity."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

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


class PeerProcess:
    """A peer tool's worker in its own venv, driven over a JSON-lines pipe.

    ``args`` are the worker's command-line arguments after the script path;
    ``name`` is used in error messages; ``is_failure(res)`` decides whether a
    reply is an error to raise.
    """

    def __init__(self, python: Path, worker: Path, args: list[str], log: Path, name: str,
                 is_failure: Any = None) -> None:
        self.name = name
        self._is_failure = is_failure or (lambda res: isinstance(res.get("error"), str))
        self._log = open(log, "a")  # closed in close()
        self.proc = subprocess.Popen([str(python), str(worker), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)

    def ask(self, cmd: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died (exit {self.proc.wait()}); see {self._log.name}")
        res = json.loads(line)
        if self._is_failure(res):
            raise RuntimeError(f"{self.name} worker command {cmd} failed:\n{res['error']}")
        return res

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_json(cmd: list[str], what: str) -> dict[str, Any]:
    """Run a child process and parse the JSON object on the last line of its output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def proc_status(name: str) -> int:
    """A byte count from /proc/self/status (e.g. "VmRSS", "VmHWM")."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{name} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs 5); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peer_venv(venv: Path, packages: list[str], check_code: str, what: str) -> tuple[Path | None, str]:
    """A peer tool's venv python, created with ``pip install packages`` if ``check_code`` fails in it.

    Returns (python, "reused" | "created"), or (None, why) on failure.
    """
    py = venv / "bin" / "python"
    check = [str(py), "-c", check_code]
    if py.is_file() and subprocess.run(check, capture_output=True, check=False).returncode == 0:
        return py, "reused"
    print(f"creating {venv} (python -m venv; pip install {' '.join(packages)}) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", *packages],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return None, f"pip install {packages[0]} failed: {proc.stderr.strip().splitlines()[-1:]}"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot create the venv: {exc}"
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        return None, f"{what} does not import in the venv"
    return py, "created"
