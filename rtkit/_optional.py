"""Import optional dependencies with a clear error naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the optional package '{module.split('.')[0]}': "
            f"install it with  pip install 'rtkit[{extra}]'"
        ) from exc
