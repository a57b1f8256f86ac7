"""The layering of DESIGN.md holds: no module imports from a higher layer than its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "enklave"

# Layer of each top-level part (DESIGN.md, "Layers"). Sealing sits between the platform and the runtime: it
# needs only a Platform, and enklave.enclave offers it to enclave code. deploy shares the runtime's layer: the
# host asks it for the Gramine command line.
LAYERS = {
    "errors": 0, "_home": 0, "_json": 0, "_b64url": 0, "_samples": 0, "_templates": 0, "_x509": 0,
    "sgx": 1,
    "attestation": 2,
    "platform": 3,
    "sealing": 3.5,
    "runtime": 4, "enclave": 4, "host": 4, "deploy": 4,
    "channels": 5,
    "services": 6, "apps": 6, "inference": 6,
    "cli": 7, "__main__": 7, "__init__": 7,
}  # fmt: skip


def _layer(module: str) -> float:
    part = module.split(".")[1] if module.count(".") else "__init__"
    if part not in LAYERS:
        raise AssertionError(f"{module}: add its top-level part to LAYERS")
    return LAYERS[part]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "_templates" in path.parts:
            continue
        relative = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found.append((name, path))
    return found


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda value: str(value).rsplit("/", 1)[-1])
def test_no_import_from_a_higher_layer(module: str, path: Path) -> None:
    if module == "enklave":
        return  # The package root only names the layers.
    own = _layer(module)
    tree = ast.parse(path.read_text("utf-8"))
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            if target == "enklave" or not target.startswith("enklave."):
                continue
            assert _layer(target) <= own, f"{module} (layer {own}) imports {target} (layer {_layer(target)})"
