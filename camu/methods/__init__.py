"""Unlearning methods. Each module is imported here so that registration is deterministic in every
process (Ray workers import by module path). Adding a method: one module, one import line below."""

from camu.methods import bad_teacher as _bad_teacher  # noqa: F401
from camu.methods import boundary as _boundary  # noqa: F401
from camu.methods import camu as _camu  # noqa: F401
from camu.methods import finetune as _finetune  # noqa: F401
from camu.methods import l1_sparse as _l1_sparse  # noqa: F401
from camu.methods import neggrad as _neggrad  # noqa: F401
from camu.methods import neggrad_plus as _neggrad_plus  # noqa: F401
from camu.methods import random_label as _random_label  # noqa: F401
from camu.methods import retrain as _retrain  # noqa: F401
from camu.methods import salun as _salun  # noqa: F401
from camu.methods import scrub as _scrub  # noqa: F401
from camu.methods import unrolling as _unrolling  # noqa: F401
from camu.methods.base import (
    METHODS,
    MethodError,
    MethodParams,
    Preset,
    Setting,
    UnlearnContext,
    UnlearningMethod,
    UnlearnResult,
    check_applicable,
    method_class,
)
from camu.methods.camu import CamuParams, official_params

__all__ = ["METHODS", "CamuParams", "MethodError", "MethodParams", "Preset", "Setting", "UnlearnContext",
           "UnlearnResult",
           "UnlearningMethod", "check_applicable", "method_class", "official_params"]
