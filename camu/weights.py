"""Saving and loading model weights without executing pickled code.

Weights are written as safetensors. Reading accepts safetensors, or a PyTorch state-dict file read
with ``torch.load(weights_only=True)``; anything else (a pickled module, a tampered file) is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from camu.errors import CamuInputError


class UnsafeWeightsError(CamuInputError):
    """A weights file that cannot be loaded safely (pickled code, corruption, wrong contents)."""


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict as safetensors (contiguous CPU tensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a weights-only torch file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure here means "not safe/valid weights"
        raise UnsafeWeightsError(f"{path}: refused to load ({type(err).__name__}: {err}); only safetensors or "
                                 f"weights-only state dicts are accepted") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeWeightsError(f"{path}: not a state dict of tensors")
    return state


def read_checkpoint_state(path: str | Path) -> dict:
    """A training checkpoint (model and optimizer states, epoch) written with ``torch.save``, read with
    ``weights_only=True``: tensors, numbers, strings and containers only, never pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure here means "not a safe checkpoint"
        raise UnsafeWeightsError(f"{path}: refused to load the checkpoint ({type(err).__name__}: {str(err)[:300]}); "
                                 f"only weights-only checkpoints are read") from None
    if not isinstance(state, dict):
        raise UnsafeWeightsError(f"{path}: not a checkpoint state mapping")
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights into ``model`` (strict: every key must match)."""
    state = read_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UnsafeWeightsError(f"{path}: weights do not fit the model: {str(err)[:500]}") from None
    return model
