"""The public API: every name in __all__ exists, is documented, and nothing private leaks."""

from __future__ import annotations

import importlib

import pytest

import enklave
import enklave.errors

PUBLIC_MODULES = [
    "enklave",
    "enklave.sgx",
    "enklave.attestation",
    "enklave.errors",
    "enklave.platform",
    "enklave.platform.simulated",
    "enklave.sealing",
    "enklave.runtime",
    "enklave.enclave",
    "enklave.host",
    "enklave.deploy",
    "enklave.services.attestation",
    "enklave.services.attestation.policy",
    "enklave.services.kbs",
    "enklave.services.storage",
    "enklave.channels",
    "enklave.channels.relay",
    "enklave.inference",
    "enklave.inference.client",
    "enklave.inference.protocol",
    "enklave.inference.service",
    "enklave.inference.config",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_are_public(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__, name
    assert len(set(module.__all__)) == len(module.__all__)
    for member in module.__all__:
        assert not member.startswith("_") or member == "__version__"
        assert hasattr(module, member), f"{name}.{member}"


@pytest.mark.parametrize("name", PUBLIC_MODULES[1:])
def test_public_classes_and_functions_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    for member in module.__all__:
        value = getattr(module, member)
        # Type aliases (typing.Literal and friends) carry no docstring of their own.
        is_alias = getattr(value, "__module__", "") == "typing"
        if callable(value) and not isinstance(value, type(enklave)) and not is_alias:
            assert (value.__doc__ or "").strip(), f"{name}.{member} has no docstring"


def test_every_error_derives_from_the_root() -> None:
    for member in enklave.errors.__all__:
        error = getattr(enklave.errors, member)
        assert issubclass(error, enklave.errors.EnklaveError)
        # The tree in the module docstring names every error.
        assert member in (enklave.errors.__doc__ or ""), member


def test_the_three_branches_are_disjoint() -> None:
    from enklave.errors import BadDataError, TransportError, UsageError

    for a, b in [(BadDataError, TransportError), (BadDataError, UsageError), (TransportError, UsageError)]:
        assert not issubclass(a, b)
        assert not issubclass(b, a)
