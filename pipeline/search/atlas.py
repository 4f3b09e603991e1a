"""A 2-D map of an indexed zoo: the embeddings' first two principal axes.

Embeddings are taken as unit vectors (as the index holds them); the map centres them on their mean and projects them on the two
directions of largest variance (an exact SVD of the centred ``[n, dim]`` matrix: linear in ``n``). A
vector not in the zoo (an upload) is placed by the same projection, so it lands among the models it
is nearest to along those axes. Invariant to whatever the encoder is invariant to; axes are fixed
up to sign by the zoo, so two maps of one index agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.numerics import unit_rows

#: a map uses at most this many models to find its axes (evenly spaced over the index)
FIT_MODELS = 20_000


@dataclass
class Atlas:
    """``mean [dim]`` and ``axes [2, dim]`` (orthonormal rows; fewer when the zoo spans fewer)."""
    mean: np.ndarray
    axes: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray) -> "Atlas":
        """The map of ``vectors [n, dim]``."""
        vectors = unit_rows(np.asarray(vectors, np.float64))
        sample = vectors[np.linspace(0, len(vectors) - 1, min(len(vectors), FIT_MODELS)).astype(int)] \
            if len(vectors) else vectors
        mean = sample.mean(0) if len(sample) else np.zeros(vectors.shape[1])
        _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
        axes = vt[:2]
        axes = axes * np.where(axes[np.arange(len(axes)), np.abs(axes).argmax(1)] < 0, -1.0, 1.0)[:, None]
        return cls(mean, axes)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``[n, 2]`` map positions of ``vectors [n, dim]``, normalized first (zeros on an axis
        the zoo lacks)."""
        coords = (unit_rows(np.asarray(vectors, np.float64)) - self.mean) @ self.axes.T
        return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
