"""What the channels' verification results share: the attested enclave's identity, read from the verified quote.

:class:`~enklave.channels.ratls.VerifiedPeer` and :class:`~enklave.channels.ohttp_attested.VerifiedKeyConfig`
both hold a ``quote`` that verification produced; :class:`QuoteIdentity` gives both the same ``mr_enclave`` and
``mr_signer`` views of it, as plain ``bytes``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from enklave.attestation.verified import VerifiedQuote

__all__ = ["QuoteIdentity"]


class QuoteIdentity:
    """A base for frozen, slotted results that hold a verified ``quote``; it adds no fields and no slots."""

    __slots__ = ()

    # Declared for type checking only: each subclass declares ``quote`` as its own dataclass field.
    quote: VerifiedQuote

    @property
    def mr_enclave(self) -> bytes:
        """The attested enclave's MRENCLAVE."""
        return bytes(self.quote.mr_enclave)

    @property
    def mr_signer(self) -> bytes:
        """The attested enclave's MRSIGNER."""
        return bytes(self.quote.mr_signer)
