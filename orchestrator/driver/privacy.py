"""[3b] Per-example membership evaluation (``evaluation.privacy``): K shadow models per (scenario, seed),
trained concurrently as Ray Train runs and cached like oracles (keyed by their exact training set), then
the LiRA fit every run of the split is scored with (``camu.privacy``).

Shadow k trains with the job's recipe on D_r plus half of D_f; shadows come in complementary pairs
(2j on a random half H_j, 2j+1 on the rest), so every forgotten sample is "in" exactly half of them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import torch

from camu.privacy import lira_fit, per_example_privacy
from camu.scenarios import forget_indices, retain_indices
from orchestrator.driver.context import JobRun, Stage
from orchestrator.driver.reference_models import train_stage
from orchestrator.progress import say
from orchestrator.worker.evaluation import forget_phi
from orchestrator.worker.wire import WorkerConfig

SHADOW_TAG = 4242


def shadow_membership(forget_count: int, shadows: int, seed: int) -> np.ndarray:
    """(shadows x |D_f|) bool: which forgotten samples each shadow trains on (complementary pairs)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + SHADOW_TAG)
    masks = []
    for k in range(shadows):
        if k % 2 == 0:
            half = torch.zeros(forget_count, dtype=torch.bool)
            half[torch.randperm(forget_count, generator=g)[: forget_count // 2]] = True
            masks.append(half)
        else:
            masks.append(~masks[-1])
    return torch.stack(masks).numpy()


def privacy_stage(ctx: JobRun, scenario: str, seed: int, split: pa.Table, oracle: Stage, original: Stage,
                  worker: WorkerConfig) -> tuple[str, dict[str, dict[str, float]]]:
    """Train (or reuse) the shadows, fit the per-example in/out distributions on D_f and save them for the
    split's runs; returns (path of the fit, the original's and the oracle's per-example metrics)."""
    spec = ctx.spec.evaluation.privacy
    assert spec is not None
    forget, retain = forget_indices(split), retain_indices(split)
    masks = shadow_membership(len(forget), spec.shadows, seed)

    def train(k: int) -> Stage:
        indices = torch.cat([retain, forget[torch.from_numpy(masks[k])]])
        return train_stage(ctx, "shadow", None, indices, f"shadow {k + 1}/{spec.shadows} {scenario}/seed{seed}",
                           explicit=True)

    with ThreadPoolExecutor(max_workers=ctx.spec.sweep.max_concurrent_trials) as pool:
        shadows = list(pool.map(train, range(spec.shadows)))
    res = ctx.spec.resources
    task = ray.remote(num_cpus=res.cpus_per_worker, num_gpus=min(res.gpus_per_worker, 1.0))(forget_phi)
    phi = ray.get(task.remote(worker, [s.weights for s in shadows] + [oracle.weights, original.weights]))
    fit = lira_fit(phi[: spec.shadows], masks)
    path = Path(ctx.job_dir) / "privacy" / f"{scenario}-seed{seed}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    oracle_phi, original_phi = phi[spec.shadows], phi[spec.shadows + 1]
    np.savez(path, mu_in=fit.mu_in, mu_out=fit.mu_out, sd_in=fit.sd_in, sd_out=fit.sd_out, oracle_phi=oracle_phi,
             in_mask=masks)
    found: dict[str, Any] = {"oracle": per_example_privacy(fit, oracle_phi, oracle_phi),
                             "original": per_example_privacy(fit, original_phi, oracle_phi)}
    say(f"    per-example privacy ({spec.shadows} shadows): original AUC {found['original']['lira_auc']:.3f}, "
        f"TPR@1%FPR {found['original']['lira_tpr_at_1pct_fpr']:.3f} (the oracle: 0.5 / 0.01 by definition)")
    return str(path), found
