"""Assertions for symmetry tests, used by every test that checks an invariance or a group action.

* :func:`random_transform` applies a random element of a graph's symmetry group (the claimed part of
  it: permutations, positive scalings, sign flips);
* :func:`assert_invariant` checks that a function of a graph does not change under such elements,
  :func:`assert_not_invariant` that it does change under a transformation that is not a symmetry;
* :func:`assert_same_function` checks that two state dicts make a PyTorch model compute the same
  outputs, to the tolerance of the dtype it runs in (:data:`TOLERANCES`).
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from pipeline.graph.schema import WeightGraph
from pipeline.symmetry import random_element, transformed

#: relative tolerance of an exact invariance computed in each dtype
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
#: a change smaller than this (relative, float64) is rounding, not a function telling two inputs apart
NOT_INVARIANT = 1e-9


def tolerance(dtype) -> float:
    """The relative tolerance for values computed in ``dtype`` (a torch or numpy dtype)."""
    if not isinstance(dtype, torch.dtype):
        dtype = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    return TOLERANCES[dtype]


def relative_difference(a, b) -> float:
    """``max |a - b| / max |b|`` (arrays or tensors of one shape)."""
    a, b = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64) for x in (a, b))
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), 1e-12))


def random_transform(graph: WeightGraph, rng: np.random.Generator, **claims) -> WeightGraph:
    """``graph`` moved by a random group element; ``claims``: :func:`pipeline.symmetry.random_element`'s
    ``permute`` / ``scale`` / ``sign`` switches (default: the whole group)."""
    return transformed(graph, random_element(graph, rng, **claims))


def assert_invariant(fn: Callable[[WeightGraph], object], graph: WeightGraph, rng: np.random.Generator,
                     trials: int = 2, rtol: float | None = None, dtype=torch.float32, **claims) -> None:
    """``fn(g)`` equals ``fn(graph)`` for ``trials`` random transforms ``g`` of ``graph``, to ``rtol``
    (default: the tolerance of ``dtype``, what ``fn`` computes in). Each transform must change the
    weights, or the check would be empty."""
    rtol = tolerance(dtype) if rtol is None else rtol
    reference = fn(graph)
    for _ in range(trials):
        moved = random_transform(graph, rng, **claims)
        assert any(not np.array_equal(moved.tensors[n], graph.tensors[n]) for n in graph.tensors), \
            "the group element left every weight unchanged"
        difference = relative_difference(fn(moved), reference)
        assert difference <= rtol, f"not invariant: relative difference {difference:.3g} > {rtol:.3g}"


def assert_not_invariant(fn: Callable[[WeightGraph], object], graph: WeightGraph, changed: WeightGraph,
                         min_change: float = NOT_INVARIANT) -> None:
    """``fn`` tells ``graph`` and ``changed`` (a transformation that is not a symmetry) apart."""
    difference = relative_difference(fn(changed), fn(graph))
    assert difference > min_change, f"blind to the change: relative difference {difference:.3g}"


def model_outputs(model: torch.nn.Module, tensors: dict, x: torch.Tensor) -> np.ndarray:
    """Outputs of a copy of ``model`` holding ``tensors`` (name -> array) at ``x``; float inputs are
    cast to the model's dtype."""
    clone = copy.deepcopy(model)
    clone.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()})
    dtype = next(clone.parameters()).dtype
    with torch.no_grad():
        return clone(x if not x.is_floating_point() else x.to(dtype)).numpy()


def assert_same_function(model: torch.nn.Module, tensors: dict, reference: dict, x: torch.Tensor,
                         rtol: float | None = None) -> None:
    """``model`` computes the same outputs at ``x`` with ``tensors`` as with ``reference``, to ``rtol``
    of the largest output (default: the tolerance of the model's dtype)."""
    rtol = tolerance(next(model.parameters()).dtype) if rtol is None else rtol
    expected = model_outputs(model, reference, x)
    np.testing.assert_allclose(model_outputs(model, tensors, x), expected, rtol=rtol,
                               atol=rtol * np.abs(expected).max())


def assert_different_function(model: torch.nn.Module, tensors: dict, reference: dict, x: torch.Tensor,
                              min_change: float = 1e-3) -> None:
    """``model`` computes visibly different outputs at ``x`` with ``tensors`` than with ``reference``."""
    expected = model_outputs(model, reference, x)
    assert np.abs(model_outputs(model, tensors, x) - expected).max() > min_change * np.abs(expected).max()
