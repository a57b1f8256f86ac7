"""JSON-ready views of SGX structures (binary values as lowercase hex), for command lines and services."""

from __future__ import annotations

from typing import Any

from cryptography import x509

from enklave._x509 import DECODE_ERRORS, decode_certificate
from enklave.errors import InvalidQuote
from enklave.sgx.pck import PckExtension
from enklave.sgx.quote import CertificationDataType, Quote
from enklave.sgx.report import ReportBody

__all__ = [
    "pck_certificates",
    "pck_certificates_from_pem",
    "pck_extension_to_dict",
    "quote_to_dict",
    "report_body_to_dict",
]


def report_body_to_dict(body: ReportBody) -> dict[str, Any]:
    """Every field of a report body."""
    return {
        "mrenclave": body.mr_enclave.hex(),
        "mrsigner": body.mr_signer.hex(),
        "isv_prod_id": body.isv_prod_id,
        "isv_svn": body.isv_svn,
        "debug": body.debug,
        "attributes": {
            "flags": f"{body.attributes.flags:016x}",
            "flag_names": body.attributes.flag_names(),
            "xfrm": f"{body.attributes.xfrm:016x}",
        },
        "report_data": body.report_data.hex(),
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": f"{body.misc_select:08x}",
        "isv_ext_prod_id": body.isv_ext_prod_id.hex(),
        "config_id": body.config_id.hex(),
        "config_svn": body.config_svn,
        "isv_family_id": body.isv_family_id.hex(),
    }


def pck_extension_to_dict(pck: PckExtension) -> dict[str, Any]:
    """Every field of the SGX PCK certificate extension."""
    config = pck.configuration
    return {
        "ppid": pck.ppid.hex(),
        "tcb_components": list(pck.tcb.comp_svns),
        "pce_svn": pck.tcb.pce_svn,
        "cpu_svn": pck.tcb.cpu_svn.hex(),
        "pce_id": pck.pce_id.hex(),
        "fmspc": pck.fmspc.hex(),
        "sgx_type": pck.sgx_type.name,
        "platform_instance_id": None if pck.platform_instance_id is None else pck.platform_instance_id.hex(),
        "configuration": None if config is None else {
            "dynamic_platform": config.dynamic_platform,
            "cached_keys": config.cached_keys,
            "smt_enabled": config.smt_enabled,
        },
    }  # fmt: skip


def pck_certificates(quote: Quote) -> list[x509.Certificate]:
    """The PCK chain the quote carries (certification data type 5), parsed; empty for other types."""
    pem = quote.pck_chain_pem
    return [] if pem is None else pck_certificates_from_pem(pem)


def pck_certificates_from_pem(pem: bytes) -> list[x509.Certificate]:
    """A PCK chain in PEM, parsed and decoded; raises :class:`InvalidQuote` when it is not PEM certificates."""
    try:
        return [decode_certificate(cert) for cert in x509.load_pem_x509_certificates(pem)]
    except DECODE_ERRORS as exc:
        raise InvalidQuote(f"the PCK certificate chain is malformed: {exc}") from exc


def quote_to_dict(quote: Quote) -> dict[str, Any]:
    """Every field of a quote; ``fmspc`` and ``pck`` come from the PCK certificate when the quote carries it."""
    header = quote.header
    certs = pck_certificates(quote)
    pck = PckExtension.from_certificate(certs[0]) if certs else None
    cert_type = quote.certification_data.type
    return {
        "version": quote.version,
        "attestation_key_type": header.attestation_key_type,
        "tee_type": header.tee_type,
        "qe_svn": header.qe_svn,
        "pce_svn": header.pce_svn,
        "qe_vendor_id": header.qe_vendor_id.hex(),
        "user_data": header.user_data.hex(),
        **report_body_to_dict(quote.body),
        "fmspc": None if pck is None else pck.fmspc.hex(),
        "signature": quote.signature.hex(),
        "attestation_key": quote.attestation_key.hex(),
        "qe_report": report_body_to_dict(quote.qe_report),
        "qe_report_signature": quote.qe_report_signature.hex(),
        "qe_auth_data": quote.qe_auth_data.hex(),
        "certification_data": {
            "type": cert_type,
            "name": CertificationDataType(cert_type).name,
            "size": len(quote.certification_data.data),
            "pck_chain": [cert.subject.rfc4514_string() for cert in certs],
        },
        "pck": None if pck is None else pck_extension_to_dict(pck),
        "size": len(quote.raw),
    }
