"""Appraisal options that several commands share, defined once so that their names and help agree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["identity_arguments", "min_tcb_evaluation_data_number_option"]

min_tcb_evaluation_data_number_option = click.option(
    "--min-tcb-evaluation-data-number",
    "min_tcb_eval",
    type=click.IntRange(0, 0xFFFF_FFFF),
    metavar="N",
    help="Refuse evidence judged with collateral older than the TCB recovery that raised Intel's "
    "tcbEvaluationDataNumber to N.",
)
"""``--min-tcb-evaluation-data-number N``, passed to the command as ``min_tcb_eval`` (None when not given)."""


def identity_arguments(
    *,
    mrenclave: Sequence[str],
    mrsigner: Sequence[str],
    isv_prod_id: int | None,
    min_isv_svn: int | None,
    min_tcb_eval: int | None,
    allow_debug: bool,
    allow_simulated: bool,
) -> dict[str, Any]:
    """``EnclavePolicy`` keyword arguments for the identity options a command was given; options left out stay
    at the policy's defaults (its hex and range checks then apply to the ones given)."""
    arguments: dict[str, Any] = {"allow_debug": allow_debug, "allow_simulated": allow_simulated}
    optional = {
        "mr_enclave": tuple(mrenclave) or None,
        "mr_signer": tuple(mrsigner) or None,
        "isv_prod_id": isv_prod_id,
        "min_isv_svn": min_isv_svn,
        "min_tcb_evaluation_data_number": min_tcb_eval,
    }
    arguments.update((name, value) for name, value in optional.items() if value is not None)
    return arguments
