"""Import enclave code from the measured bundle, never from the host's file system.

The enclave process reads the bundle once, checks its measurement and signature (what EINIT checks), and then
imports the entry module and its siblings from those same bytes. Reading the files again from disk would let the
host swap them between the check and the import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType

__all__ = ["BundleImporter", "module_files"]


def module_files(files: Mapping[str, bytes]) -> dict[str, tuple[str, bool]]:
    """Map importable module names to (bundle path, is_package) for the ``.py`` files of a bundle."""
    modules: dict[str, tuple[str, bool]] = {}
    for path in files:
        if not path.endswith(".py"):
            continue
        parts = path[: -len(".py")].split("/")
        if not all(part.isidentifier() for part in parts):
            continue
        if parts[-1] == "__init__":
            if len(parts) > 1:
                modules[".".join(parts[:-1])] = (path, True)
        else:
            modules[".".join(parts)] = (path, False)
    return modules


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta path finder that serves the bundle's Python modules from memory, ahead of every other finder."""

    def __init__(self, files: Mapping[str, bytes]) -> None:
        self._files = files
        self._modules = module_files(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        entry = self._modules.get(fullname)
        if entry is None:
            return None
        bundle_path, is_package = entry
        spec = importlib.util.spec_from_loader(
            fullname, self, origin=f"<enclave>/{bundle_path}", is_package=is_package
        )
        if spec is not None and is_package:
            # Submodules are found by name through this finder, so the package path only needs to exist.
            spec.submodule_search_locations = []
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        bundle_path, _ = self._modules[module.__name__]
        code = compile(self._files[bundle_path], f"<enclave>/{bundle_path}", "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - this is the import of measured enclave code

    def install(self) -> None:
        """Put this finder first on ``sys.meta_path``."""
        sys.meta_path.insert(0, self)
