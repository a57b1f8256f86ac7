"""Appraisal options that several commands share, defined once so that their names and help agree."""

from __future__ import annotations

import click

__all__ = ["min_tcb_evaluation_data_number_option"]

min_tcb_evaluation_data_number_option = click.option(
    "--min-tcb-evaluation-data-number",
    "min_tcb_eval",
    type=click.IntRange(0, 0xFFFF_FFFF),
    metavar="N",
    help="Refuse evidence judged with collateral older than the TCB recovery that raised Intel's "
    "tcbEvaluationDataNumber to N.",
)
"""``--min-tcb-evaluation-data-number N``, passed to the command as ``min_tcb_eval`` (None when not given)."""
