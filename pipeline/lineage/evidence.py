"""What two models of one architecture say about a derivation between them, read after alignment.

:func:`pair_evidence` aligns model B to model A (:func:`pipeline.rebasin.matching.match`: hidden
permutations, sign flips and positive scalings), so a child re-based by a random group element is
compared in its parent's basis. It measures:

* ``distance``: ``1 - cosine`` of each weight matrix with its aligned counterpart, averaged over the
  matrices (each counts alike, so normalization vectors near 1 in every model do not make two
  unrelated transformers look alike); exactly invariant to either model's symmetries, near 0 for
  derivations and large for independently trained models;
* ``raw_distance``: the same without alignment (what weight-distance methods such as MoTHer read);
* ``rebased``: whether B needed a permutation or sign flip to line up with A;
* per-tensor changes, in B's raw weights when no re-basing was needed (exact) and in the aligned
  weights otherwise: the share of weight matrices left unchanged (frozen layers), whether every
  change is of low rank (a LoRA update), and each side's share of exact zeros (pruning) and number
  format (:func:`number_format`: values on the fp16, bf16 or int8 grid).

:func:`edge_type` reads a derivation's type and direction from it; :func:`merge_residual` tests
whether a model is the weight average of two others. Invariances: ``distance`` and every test are
unchanged when either model is replaced by a symmetry copy (up to float rounding), except the
exact-change tests, which fall back to tolerances under a rescaling.
"""
from __future__ import annotations

import numpy as np

from pipeline.checkpoint.dtypes import is_float, round_to
from pipeline.graph.schema import WeightGraph
from pipeline.rebasin.matching import match
from pipeline.symmetry import is_identity

#: ``distance`` below which two models are the same function up to symmetry and the rounding of
#: their number format (a rescaled fp16 model is about 1e-7 from its source); across formats, a
#: copy must also be closer than this share of the rounding a cast between them makes
SAME_FUNCTION, ROUNDING_SHARE = 1e-5, 0.1
#: ``distance`` below which a cast or pruned copy is still its source (an int8 round trip of a small
#: model moves it by about 1e-4; pruning half of the weights by about 0.05)
ARTEFACT_DISTANCE = 0.15
#: a weight matrix whose relative change is below this is unchanged (float rounding of a rescaling)
UNCHANGED = 1e-6
#: largest update rank read as LoRA (at most half the matrix's smaller side), and the singular
#: value ratio below which the rest is zero
LORA_MAX_RANK, LORA_TOL = 16, 1e-4
#: ranks of updates are read exactly up to this (LoRA ranks rarely exceed it); beyond it, as full
RANK_SKETCH = 128
#: extra share of exact zeros that makes B a pruned copy of A, whose kept entries are A's to this
#: relative change (the rounding of a rescaled copy; a fine-tune moves them about 1e-3 or more)
PRUNED_SHARE, KEPT = 0.15, 1e-4
#: a model whose weights are this close to an average of two others (relative) is their merge, when
#: the two are at least ``MERGE_CONTRAST`` times farther apart
MERGE_TOL, MERGE_CONTRAST = 1e-4, 100.0


def number_format(tensors: dict[str, np.ndarray]) -> str:
    """``fp16``, ``bf16``, ``int8`` or ``fp32``: the narrowest format every float tensor's values fit
    exactly (``int8``: each weight matrix on its own grid of 255 levels, :func:`round_to`)."""
    arrays = [np.asarray(t, np.float32) for t in tensors.values() if is_float(np.asarray(t).dtype)]
    for fmt in ("fp16", "bf16"):
        if all(np.array_equal(a, round_to(fmt, a)) for a in arrays):
            return fmt
    matrices = [a for a in arrays if a.ndim >= 2]
    if matrices and all(np.abs(a - round_to("int8", a)).max() <= 1e-3 * np.abs(a).max() / 127.0 for a in matrices):
        return "int8"
    return "fp32"


def _distance(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    """``1 - cosine`` of each matrix with its counterpart, averaged over the matrices."""
    cosines = [float(np.vdot(x, y) / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30)) for x, y in zip(ours, theirs)]
    return max(0.0, 1.0 - float(np.mean(cosines))) if cosines else 0.0


def _zero_share(tensors: dict[str, np.ndarray]) -> float:
    matrices = [np.asarray(t) for t in tensors.values() if np.asarray(t).ndim >= 2]
    return float(sum((m == 0).sum() for m in matrices) / max(1, sum(m.size for m in matrices)))


def _rank_cap(shape: tuple[int, ...]) -> int:
    """The largest update rank read as low for a weight matrix of ``shape`` (``[out, ...]``)."""
    return min(LORA_MAX_RANK, min(shape[0], int(np.prod(shape[1:]))) // 2)


def _rank(diff: np.ndarray) -> int:
    """The numerical rank of a weight matrix's change (``[out, ...]``, flattened to ``[out, in]``):
    its singular values above ``LORA_TOL`` of the largest. A matrix whose sides both exceed
    ``RANK_SKETCH`` is read through a Gaussian sketch of that many columns (``diff @ G``, of the
    same rank while that is below ``RANK_SKETCH``, with probability 1): an exact rank below it, the
    smaller side from it on, at ``RANK_SKETCH / min(out, in)`` of a full decomposition's cost."""
    matrix = diff.reshape(len(diff), -1).astype(np.float64)
    sketched = min(matrix.shape) > RANK_SKETCH
    if sketched:
        matrix = matrix @ np.random.default_rng(0).standard_normal((matrix.shape[1], RANK_SKETCH))
    s = np.linalg.svd(matrix, compute_uv=False)
    rank = int((s > LORA_TOL * s[0]).sum()) if s[0] > 0 else 0
    return min(diff.shape[0], diff[0].size) if sketched and rank == RANK_SKETCH else rank


def _kept_change(ours: list[np.ndarray], theirs: list[np.ndarray], sparser_theirs: bool) -> float:
    """Relative change of the weight matrices' entries that the sparser side kept (nonzero): a
    pruned copy keeps its source's entries exactly (to a rescaling's rounding)."""
    diff = norm = 0.0
    for o, t in zip(ours, theirs):
        kept = (t if sparser_theirs else o) != 0
        diff += float(np.square((t - o)[kept]).sum())
        norm += float(np.square(o[kept]).sum())
    return float(np.sqrt(diff / max(norm, 1e-300)))


def pair_evidence(a: WeightGraph, b: WeightGraph, seed: int = 0) -> dict:
    """Evidence on a derivation between ``a`` and ``b`` (one architecture; see the module docstring):
    ``distance``, ``raw_distance``, ``rebased``, ``unchanged_share``, ``changed_low_rank``,
    ``rank_share`` (the largest numerical rank of a change over its matrix's smaller side),
    ``zeros`` (A's, B's), ``kept_change`` (of the entries the sparser one kept), ``formats`` (A's,
    B's) and ``rounding`` (where one is fp32 and the other narrower: the distance casting the fp32
    one to the other's format would make, which a cast shows and a symmetry copy of the narrow one
    does not)."""
    result = match(a, b, seed=seed)
    rebased = not is_identity(result.element, rtol=np.inf)  # a permutation or sign flip (scales alone are no re-basing)
    theirs = {n: np.asarray(t, np.float32) for n, t in (result.aligned if rebased else b.tensors).items()}
    ours = {n: np.asarray(t, np.float32) for n, t in a.tensors.items()}
    matrices = [n for n, t in ours.items() if t.ndim >= 2]
    changes = {n: float(np.linalg.norm(theirs[n] - ours[n]) / max(np.linalg.norm(ours[n]), 1e-30))
               for n in ours}
    changed = [n for n in matrices if changes[n] > UNCHANGED]
    zeros = (_zero_share(a.tensors), _zero_share(b.tensors))
    sparser = zeros[1] > zeros[0]
    kept = _kept_change([ours[n] for n in matrices], [theirs[n] for n in matrices], sparser)
    vectors_changed = any(changes[n] > UNCHANGED for n in ours if n not in matrices)
    testable = [n for n in changed if _rank_cap(ours[n].shape) >= 2]
    ranks = {n: _rank(theirs[n] - ours[n]) for n in testable}
    formats = (number_format(a.tensors), number_format(b.tensors))
    wide, narrow = (b.tensors, formats[0]) if formats[1] == "fp32" else (a.tensors, formats[1])  # as stored
    wide = {n: np.asarray(wide[n], np.float32) for n in matrices}
    rounding = _distance([wide[n] for n in matrices], [round_to(narrow, wide[n]) for n in matrices]) \
        if formats[0] != formats[1] and "fp32" in formats else 0.0
    return {"distance": _distance([ours[n] for n in matrices], [theirs[n] for n in matrices]) if matrices
            else max(0.0, 1.0 - result.similarity), "rounding": rounding,
            "raw_distance": max(0.0, 1.0 - result.naive_similarity),
            "rebased": rebased,
            "unchanged_share": 1.0 - len(changed) / max(1, len(matrices)),
            "changed_low_rank": bool(testable) and not vectors_changed
            and all(r <= _rank_cap(ours[n].shape) for n, r in ranks.items()),
            "rank_share": max((r / min(ours[n].shape[0], ours[n][0].size) for n, r in ranks.items()), default=1.0),
            "zeros": zeros, "kept_change": kept,
            "formats": formats}


def edge_type(evidence: dict) -> tuple[str, float]:
    """``(type, direction)`` of the derivation between A and B: the type (one of
    :data:`pipeline.lineage.EDGE_TYPES` but ``merge``, which needs three models) and how strongly
    the evidence says A is the parent (``+1``), B is (``-1``) or neither (``0``: a symmetric test)."""
    (zeros_a, zeros_b), (format_a, format_b) = evidence["zeros"], evidence["formats"]
    narrowed = format_a != format_b and "fp32" in (format_a, format_b)  # a cast keeps fewer bits
    # across formats, a symmetry copy is far closer than the cast's rounding would put it
    same = evidence["distance"] < SAME_FUNCTION and (not narrowed or evidence["distance"] < ROUNDING_SHARE * evidence["rounding"])
    if evidence["rebased"] and same:
        return "symmetry", 0.0
    if evidence["distance"] < ARTEFACT_DISTANCE and format_a != format_b:
        return "cast", 1.0 if format_a == "fp32" else -1.0 if format_b == "fp32" else 0.0
    # kept entries are compared exactly where no rescaling of a re-basing blurs them
    kept = evidence["kept_change"] < KEPT if not evidence["rebased"] else evidence["distance"] < ARTEFACT_DISTANCE
    if abs(zeros_b - zeros_a) >= PRUNED_SHARE and kept:
        return "prune", 1.0 if zeros_b > zeros_a else -1.0
    if evidence["changed_low_rank"]:
        return "lora", 0.0
    if evidence["unchanged_share"] > 0:
        return "partial_finetune", 0.0
    return "finetune", 0.0


def merge_residual(child: WeightGraph, first: WeightGraph, second: WeightGraph) -> tuple[float, float, float]:
    """``(residual, alpha, spread)``: how far ``child`` is, relative to its norm, from the best
    weighted average ``alpha * first + (1 - alpha) * second`` of the two aligned to it by
    permutations and sign flips (least squares; merges are made in one basis, so no rescaling), and
    how far apart the two are, relative to the child: a merge has ``residual`` far below ``spread``."""
    x = np.concatenate([np.asarray(t, np.float64).ravel() for t in child.tensors.values()])
    u, v = (np.concatenate([np.asarray(aligned[n], np.float64).ravel() for n in child.tensors])
            for aligned in (match(child, g, rescale=False).aligned for g in (first, second)))
    d, norm = u - v, max(np.linalg.norm(x), 1e-300)
    alpha = float(np.clip(np.dot(x - v, d) / max(np.dot(d, d), 1e-300), 0.0, 1.0))
    return float(np.linalg.norm(x - v - alpha * d) / norm), alpha, float(np.linalg.norm(d) / norm)
