"""Where an interpreter keeps what an enclave needs: itself, its standard library, the site-packages of enklave
and its dependencies, and the shared libraries it loads.

The interpreter is asked itself (``python -I -c ...``), in isolated mode as the enclave runs it, because a
virtual environment, a pyenv build or a system Python each lay these out differently, and ``gramine-manifest``
(whose ``{{ python.stdlib }}`` describes the Python that runs *it*) may not even run the same interpreter.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enklave._json import loads
from enklave.errors import PlatformError

__all__ = ["PythonLayout", "python_layout"]

_TIMEOUT = 60.0

# Run by the target interpreter; prints one JSON object. Requirements with an "extra" marker are optional
# features and are left out; others whose distribution is not installed are skipped (platform-specific ones).
_PROBE = r"""
import importlib.metadata as md, json, os, re, sys, sysconfig
seen, todo, found = set(), [sys.argv[1]], []
while todo:
    name = todo.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    seen.add(key)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    found.append(dist)
    for req in dist.requires or []:
        marker = req.partition(";")[2]
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if match and "extra" not in marker:
            todo.append(match.group(0))
if not found:
    sys.exit("distribution %s is not installed for this interpreter" % sys.argv[1])
packages = set()
for dist in found:
    base = str(dist.locate_file(""))
    if dist.files is None:
        packages.add(base)
        continue
    for item in dist.files:
        if not item.parts or item.parts[0] == "..":
            continue
        top = os.path.join(base, item.parts[0])
        packages.add(top)
        if len(item.parts) == 1 and top.endswith(".pth") and os.path.isfile(top):
            with open(top, encoding="utf-8") as handle:
                for line in handle.read().splitlines():
                    line = line.strip()
                    if line and not line.startswith(("#", "import")) and os.path.isdir(line):
                        packages.add(os.path.abspath(line))
cv = sysconfig.get_config_var
print(json.dumps({
    "executable": sys.executable, "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "paths": sysconfig.get_paths(), "multiarch": cv("MULTIARCH") or "", "shared": bool(cv("Py_ENABLE_SHARED")),
    "libdir": cv("LIBDIR") or "", "ldlibrary": cv("LDLIBRARY") or "", "dynload": cv("DESTSHARED") or "",
    "packages": sorted(packages),
}))
"""


@dataclass(frozen=True, slots=True)
class PythonLayout:
    """The files of one interpreter that its enclave manifest must mount and trust.

    ``executables[0]`` is the path the enclave is started with (as given, so that a virtual environment's
    ``pyvenv.cfg`` is found next to it); the rest are what it resolves to. ``prefixes`` are mounted at their own
    paths; ``stdlib`` and ``extra_dirs`` are trusted directories, ``extra_files`` trusted files; ``packages`` are
    the site-packages entries (package directories, modules, ``.dist-info`` and ``.pth`` files, editable
    source directories) of enklave and its dependencies; ``system_libdirs`` are the host's architecture library
    directories (``/lib/x86_64-linux-gnu`` and ``/usr/lib/...``) and ``library_path`` the loader's search path.
    """

    executables: tuple[Path, ...]
    prefixes: tuple[Path, ...]
    stdlib: Path
    extra_dirs: tuple[Path, ...]
    extra_files: tuple[Path, ...]
    packages: tuple[Path, ...]
    system_libdirs: tuple[Path, ...]
    library_path: tuple[Path, ...]


def _probe(python: str, root: str) -> dict[str, Any]:
    argv = [python, "-I", "-c", _PROBE, root]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError) as exc:
        raise PlatformError(f"cannot run {python} to find its libraries: {exc}") from exc
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise PlatformError(
            f"{python} could not describe its libraries: {lines[-1] if lines else 'no output'}"
        )
    try:
        data = loads(result.stdout)
    except ValueError as exc:
        raise PlatformError(f"{python} printed an unreadable description of its libraries") from exc
    if not isinstance(data, dict):
        raise PlatformError(f"{python} printed an unreadable description of its libraries")
    return data


def python_layout(python: str, *, root: str = "enklave") -> PythonLayout:
    """Ask ``python`` where its files are, for an enclave that imports the distribution ``root``.

    Raises :class:`~enklave.errors.PlatformError` when the interpreter cannot run or ``root`` is not installed
    for it.
    """
    given = Path(python).absolute()
    data = _probe(str(given), root)
    paths = {key: Path(value) for key, value in data["paths"].items()}
    stdlib = paths["stdlib"]
    prefixes = [Path(data["prefix"]), Path(data["base_prefix"]).resolve()]
    executables = [given, given.resolve()]
    extra_files: list[Path] = []
    extra_dirs: list[Path] = []
    venv_cfg = Path(data["prefix"]) / "pyvenv.cfg"
    if venv_cfg.is_file():
        extra_files.append(venv_cfg)
    dynload = Path(data["dynload"]) if data["dynload"] else None
    if dynload is not None and dynload.is_dir() and not dynload.is_relative_to(stdlib):
        extra_dirs.append(dynload)
    library_path: list[Path] = []
    system = [Path(base) / data["multiarch"] for base in ("/lib", "/usr/lib")] if data["multiarch"] else []
    system_libdirs = [p for p in system if p.is_dir()]
    library_path.extend(system_libdirs)
    if data["shared"] and data["libdir"]:
        libdir = Path(data["libdir"])
        library_path.append(libdir)
        prefixes.append(libdir)
        stem = str(data["ldlibrary"]).split(".so")[0]
        extra_files.extend(sorted(p for p in libdir.glob(f"{stem}.so*") if p.is_file()))
    for exe in executables:
        prefixes.append(exe.parent)
    return PythonLayout(
        executables=tuple(dict.fromkeys(executables)),
        prefixes=tuple(dict.fromkeys(prefixes)),
        stdlib=stdlib,
        extra_dirs=tuple(extra_dirs),
        extra_files=tuple(dict.fromkeys(extra_files)),
        packages=tuple(Path(p) for p in data["packages"]),
        system_libdirs=tuple(system_libdirs),
        library_path=tuple(dict.fromkeys(library_path)),
    )
