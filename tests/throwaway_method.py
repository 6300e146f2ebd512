"""A method that exists only for the tests: registered when this module is imported (as the job's
``plugins:`` entry makes every process do), so it proves a new method needs no orchestrator change."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from camu.methods import METHODS
from camu.methods.base import Preset, UnlearningMethod, for_families
from camu.methods.common import TAG_FORGET, OptimParams, cross_entropy_pass


class ThrowawayParams(OptimParams):
    lr: float = Field(0.05, gt=0, le=1.0)
    epochs: int = Field(2, ge=1, le=10)
    batch_size: int = Field(64, ge=1, le=4096)


if "throwaway" not in METHODS:  # the test process may import it twice (as a plugin and directly)
    @METHODS.register("throwaway", "a test-only method: a little gradient ascent on D_f (github.com/example)")
    class Throwaway(UnlearningMethod):
        """Search space: lr in [1e-3, 1e-1]."""

        Params = ThrowawayParams
        presets: ClassVar[dict[str, dict[str, Preset]]] = {
            "tiny": for_families({"lr": 0.05, "epochs": 2}, "github.com/example/throwaway@0000000, unlearn.py")}
        space: ClassVar[dict[str, Any]] = {"lr": {"loguniform": [1.0e-3, 1.0e-1]}}

        def epoch(self, run, params, epoch):
            cross_entropy_pass(run, run.ctx.forget, params.batch_size, TAG_FORGET, sign=-0.1)
