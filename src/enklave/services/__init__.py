"""Services built on enklave: each an enclave module, a host module, a client module and its storage."""

from __future__ import annotations

__all__: list[str] = []
