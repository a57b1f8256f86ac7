"""The enclave's importer: bundle modules come from the bundle's bytes, and no bundle name falls through to the
host's file system (a directory without ``__init__.py`` is still a bundle package)."""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from enklave.runtime._importer import BundleImporter, module_files


@pytest.fixture
def top() -> Iterator[str]:
    """A top-level package name no other test uses; its modules are dropped from sys.modules afterwards."""
    name = f"enklave_importer_test_{uuid.uuid4().hex}"
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _import_with(files: dict[str, bytes], name: str) -> ModuleType:
    importer = BundleImporter(files)
    importer.install()
    try:
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        sys.meta_path.remove(importer)


def test_module_files_lists_every_directory_as_a_package() -> None:
    files = {"a/b/c.py": b"", "a/b/data.txt": b"", "x/__init__.py": b"", "x/y.py": b"", "top.py": b""}
    assert module_files(files) == {
        "a": ("a/", True),
        "a.b": ("a/b/", True),
        "a.b.c": ("a/b/c.py", False),
        "x": ("x/__init__.py", True),
        "x.y": ("x/y.py", False),
        "top": ("top.py", False),
    }


def test_init_beats_module_which_beats_directory() -> None:
    assert module_files({"p/__init__.py": b"", "p.py": b"", "p/m.py": b""})["p"] == ("p/__init__.py", True)
    assert module_files({"p.py": b"", "p/m.py": b""})["p"] == ("p.py", False)
    assert module_files({"p/m.py": b"", "p.py": b""})["p"] == ("p.py", False)


def test_module_in_a_directory_without_init_comes_from_the_bundle(
    top: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host holds a different, unmeasured copy of the same names on sys.path: it must never be imported.
    host = tmp_path / top
    host.mkdir()
    (host / "mod.py").write_text("WHERE = 'host'\n")
    (host / "other.py").write_text("WHERE = 'host'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    files = {f"{top}/mod.py": b"WHERE = 'bundle'\n"}

    module = _import_with(files, f"{top}.mod")
    assert module.WHERE == "bundle"
    package = sys.modules[top]
    assert package.__spec__ is not None
    assert package.__spec__.origin == f"<enclave>/{top}/"
    assert package.__path__ == []
    assert getattr(package, "__file__", None) is None
    # A name under a bundle package that the bundle lacks is not found on the host either.
    with pytest.raises(ModuleNotFoundError):
        _import_with(files, f"{top}.other")


def test_nested_implicit_packages_and_relative_imports(top: str) -> None:
    files = {
        f"{top}/sub/deep/leaf.py": b"from .. import helper\nVALUE = helper.VALUE + 1\n",
        f"{top}/sub/helper.py": b"VALUE = 41\n",
    }
    module = _import_with(files, f"{top}.sub.deep.leaf")
    assert module.VALUE == 42
    assert sys.modules[f"{top}.sub"].__spec__.origin == f"<enclave>/{top}/sub/"  # type: ignore[union-attr]


def test_regular_package_runs_its_init(top: str) -> None:
    files = {f"{top}/__init__.py": b"READY = True\n", f"{top}/mod.py": b"from . import READY\n"}
    module = _import_with(files, f"{top}.mod")
    assert module.READY is True
    assert sys.modules[top].__spec__.origin == f"<enclave>/{top}/__init__.py"  # type: ignore[union-attr]
