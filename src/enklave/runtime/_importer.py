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
    """Map importable module names to (bundle path, is_package) for the ``.py`` files of a bundle.

    Every directory that holds a bundle module (at any depth) is a package, so that no name under it is
    looked up on the host's file system: with ``pkg/__init__.py`` its path is that file, and without one it is
    ``"pkg/"`` (ending in ``/``), an implicit package with no code. As in Python, ``pkg/__init__.py`` wins
    over ``pkg.py``, which wins over a bare ``pkg/`` directory. Paths with a part that is not an identifier
    cannot be imported and are left out.
    """
    modules: dict[str, tuple[str, bool]] = {}
    packages: dict[str, tuple[str, bool]] = {}
    for path in sorted(files):
        if not path.endswith(".py"):
            continue
        parts = path[: -len(".py")].split("/")
        if not all(part.isidentifier() for part in parts):
            continue
        if parts[-1] == "__init__":
            if len(parts) > 1:
                packages[".".join(parts[:-1])] = (path, True)
        else:
            modules[".".join(parts)] = (path, False)
        # Every directory on the way is importable from the bundle, never from the host's sys.path.
        for depth in range(1, len(parts)):
            packages.setdefault(".".join(parts[:depth]), ("/".join(parts[:depth]) + "/", True))
    for name, (path, _) in list(packages.items()):
        if path.endswith("/") and name in modules:
            # A module file beats an implicit package of the same name, as it does on a file system.
            del packages[name]
    modules.update(packages)
    return modules


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A meta path finder that serves the bundle's Python modules from memory, ahead of every other finder.

    Every name :func:`module_files` lists is served from the bundle (directories as packages, with or without
    ``__init__.py``); a submodule of a bundle package that the bundle lacks is not found anywhere else.
    """

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
        # An implicit package (a directory without __init__.py) runs no code: it only makes its names local.
        source = b"" if bundle_path.endswith("/") else self._files[bundle_path]
        code = compile(source, f"<enclave>/{bundle_path}", "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - this is the import of measured enclave code

    def install(self) -> None:
        """Put this finder first on ``sys.meta_path``."""
        sys.meta_path.insert(0, self)
