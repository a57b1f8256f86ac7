"""Names a service package loads on first use (PEP 562), so that its enclave can import the package cheaply.

Both service packages re-export their host, app and client lazily: their enclaves import the package for the
policy language, release policies or key wrapping, and must not load the host, storage and HTTP stacks with it.
Each package keeps a table from name to module and calls :func:`lazy_attribute` from its ``__getattr__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

__all__ = ["lazy_attribute"]


def lazy_attribute(module: str, table: Mapping[str, str], name: str) -> object:
    """The attribute ``name`` of the module that ``table`` maps it to, imported now.

    ``module`` is the name of the package asking (for the error). Raises :class:`AttributeError`, worded as
    Python words it, for a name the table does not hold.
    """
    if name in table:
        return getattr(importlib.import_module(table[name]), name)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
