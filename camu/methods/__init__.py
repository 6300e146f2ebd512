"""Unlearning methods. Each module is imported here so that registration is deterministic in every
process (Ray workers import by module path)."""

from camu.methods import camu as _camu  # noqa: F401
from camu.methods import finetune as _finetune  # noqa: F401
from camu.methods.base import METHODS, MethodParams, UnlearnContext, UnlearnResult, run_method
from camu.methods.camu import CamuParams, official_params

__all__ = ["METHODS", "CamuParams", "MethodParams", "UnlearnContext", "UnlearnResult", "official_params", "run_method"]
