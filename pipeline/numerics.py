"""Numerical guards shared by every module that divides by a norm."""
from __future__ import annotations

import numpy as np

#: floor of every norm divided by: weights as small as 1e-15 occur in real checkpoints
TINY = 1e-30


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x [n, d]`` with each row scaled to unit L2 norm (all-zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), TINY)
