"""Helpers of the DSL tests that compare with PyTorch: the tolerance against torch, and
torch's TransformerEncoderLayer weights under TransformerBlock's names."""

from __future__ import annotations

import numpy as np
import torch

# float32 both sides, the same operations in a different order
VS_TORCH = {"rtol": 1e-5, "atol": 1e-5}
# torch's TransformerEncoderLayer names its parts differently from TransformerBlock.
ENCODER_RENAMES = {"self_attn.": "attn.", "linear1.": "mlp.0.", "linear2.": "mlp.2.",
                   "norm1.": "ln1.", "norm2.": "ln2."}


def renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TransformerEncoderLayer's state dict under TransformerBlock's names."""
    out = {}
    for name, value in state.items():
        for old, new in ENCODER_RENAMES.items():
            name = name.replace(old, new)
        out[name] = value
    return out


def assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same shape and dtype, and within ``VS_TORCH``."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, **VS_TORCH)
