"""Atomic file writing: write a temporary file beside the target, then rename.

Every rtkit writer (RT Structure Set and REG ``save``, ``Image.to_nifti``,
``DVHSet.to_csv``, :func:`rtkit.datasets.synthetic_case`) goes through
:func:`atomic_path`, so a reader of the target never sees a half-written
file, a failed write leaves no partial file behind, and an existing file is
replaced only when the caller asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputExistsError

__all__ = ["atomic_path"]


def _exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{target} already exists; pass overwrite=True (--overwrite on the command line) to replace it"
    )


@contextmanager
def atomic_path(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary name keeps the target's suffixes (``.nii.gz`` stays
    ``.nii.gz``) so writers that choose a format by extension still work.
    Without ``overwrite`` the final step is a hard link, which fails if the
    target appeared meanwhile (no check-then-write race); where the file
    system has no hard links it falls back to a rename after a new check.

    Parameters
    ----------
    path : path-like
        The file to write.
    overwrite : bool
        Replace ``path`` if it exists.

    Raises
    ------
    OutputExistsError
        (an :class:`~rtkit.RTKitError` and a :class:`FileExistsError`) if
        ``path`` exists and ``overwrite`` is false.  Nothing is written then.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise _exists_error(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = target.with_name(f".{stem}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise _exists_error(target) from None
            except OSError:  # no hard links here (some network or FAT file systems)
                if target.exists():
                    raise _exists_error(target) from None
                os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
