"""PEFT LoRA adapters: a folder of ``adapter_config.json`` and ``adapter_model.safetensors`` that
changes a base model's weight matrices by ``(lora_alpha / r) B A``.

:func:`open_adapter` reads and validates one (its config against its factors); :func:`base_of` finds
the base it declares (``base_model_name_or_path``, as a path relative to the adapter folder, a path
or a URI); :func:`merge` applies it to the base, checking that every target module exists there
with a fitting shape; :func:`canonical_factors` removes the factors' own symmetry: ``B A`` equals
``(B G)(G^-1 A)`` for every invertible ``G`` (``r x r``), so the pair is brought to the one form
``B' = U sqrt(S)``, ``A' = sqrt(S) V^T`` of the product's SVD, signs fixed. Errors are
:class:`AdapterError` (a :class:`~pipeline.checkpoint.errors.CheckpointError`) naming the folder
and the reason; an adapter whose base is missing is :class:`UnlinkedAdapter`.
"""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass

import numpy as np

from pipeline import storage
from pipeline.checkpoint.errors import CheckpointError
from pipeline.checkpoint.reader import INDEX_SUFFIX, WEIGHT_SUFFIXES, Checkpoint, open_checkpoint

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: PEFT's factor names: ``base_model.model.<module>.lora_A[.<adapter name>].weight``
_FACTOR = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[^.]+)?\.weight$")


class AdapterError(CheckpointError):
    """An adapter folder whose config or factors are malformed, lie, or do not fit its base."""


class UnlinkedAdapter(AdapterError):
    """An adapter whose declared base cannot be found."""


@dataclass
class Adapter:
    """``factors``: target module -> ``(A [r, in, ...], B [out, r, ...])`` float32; ``base``: the
    declared ``base_model_name_or_path``."""
    path: str
    base: str
    rank: int
    alpha: float
    factors: dict[str, tuple[np.ndarray, np.ndarray]]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, module: str) -> np.ndarray:
        """``(alpha / r) B A`` of a module, ``[out, in * ...]`` float64."""
        a, b = self.factors[module]
        return self.scale * (b.reshape(len(b), self.rank).astype(np.float64) @ a.reshape(self.rank, -1).astype(np.float64))


def is_adapter(uri: str) -> bool:
    return storage.exists(storage.join(uri, ADAPTER_CONFIG))


def open_adapter(uri: str) -> Adapter:
    """Read an adapter folder; :class:`AdapterError` when its config is not a LoRA config, a factor
    is missing, or the factors' rank is not the config's ``r``."""
    try:
        config = json.loads(storage.read_bytes(storage.join(uri, ADAPTER_CONFIG)))
    except (OSError, ValueError) as exc:
        raise AdapterError(uri, f"{ADAPTER_CONFIG} could not be read: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(uri, f"not a LoRA adapter config (peft_type {config.get('peft_type') if isinstance(config, dict) else None!r})")
    rank, alpha = config.get("r"), config.get("lora_alpha", config.get("r"))
    if not isinstance(rank, int) or rank <= 0 or not isinstance(alpha, (int, float)):
        raise AdapterError(uri, f"config: r must be a positive integer and lora_alpha a number (r={rank!r}, "
                                f"lora_alpha={alpha!r})")
    tensors = open_checkpoint(storage.join(uri, ADAPTER_WEIGHTS)).tensors
    found: dict[str, dict[str, np.ndarray]] = {}
    for name, tensor in tensors.items():
        m = _FACTOR.match(name)
        if m is None:
            raise AdapterError(uri, f"{name!r} is no LoRA factor (modules_to_save and embeddings are not read)")
        found.setdefault(m["module"], {})[m["which"]] = np.asarray(tensor, np.float32)
    factors = {}
    for module, pair in sorted(found.items()):
        if set(pair) != {"A", "B"}:
            raise AdapterError(uri, f"module {module!r} has lora_{'B' if 'A' in pair else 'A'} missing")
        a, b = pair["A"], pair["B"]
        if a.shape[0] != rank or b.ndim < 2 or b.shape[1] != rank:
            raise AdapterError(uri, f"config says r={rank} but module {module!r} has factors A {list(a.shape)}, "
                                    f"B {list(b.shape)}")
        factors[module] = (a, b)
    targets = config.get("target_modules")
    if isinstance(targets, list) and targets and not all(any(m == t or m.endswith(f".{t}") for m in factors)
                                                        for t in targets):
        raise AdapterError(uri, f"config's target_modules {targets} do not match the factors' modules {sorted(factors)}")
    return Adapter(uri, str(config.get("base_model_name_or_path") or ""), rank, float(alpha), factors)


def base_of(adapter: Adapter) -> str:
    """The declared base's location: relative to the adapter folder, or as written; raises
    :class:`UnlinkedAdapter` when it declares none or it does not exist (a hub name, for one)."""
    if not adapter.base:
        raise UnlinkedAdapter(adapter.path, "declares no base (base_model_name_or_path)")
    candidates = [adapter.base] if "://" in adapter.base or posixpath.isabs(adapter.base) else \
        [posixpath.normpath(storage.join(adapter.path, adapter.base)), adapter.base]
    for candidate in candidates:
        if storage.exists(candidate):
            return candidate
    raise UnlinkedAdapter(adapter.path, f"its base {adapter.base!r} is not found (looked at {candidates})")


def merge(adapter: Adapter, base: Checkpoint) -> dict[str, np.ndarray]:
    """The base's tensors with the adapter applied (float32 where changed); :class:`AdapterError`
    when a target module is not in the base or its factors do not fit the module's weight."""
    out = dict(base.tensors)
    for module in adapter.factors:
        name = f"{module}.weight"
        if name not in base.tensors:
            raise AdapterError(adapter.path, f"target module {module!r} is not in the base {base.path}")
        weight = np.asarray(base.tensors[name], np.float32)
        a, b = adapter.factors[module]
        if len(b) != weight.shape[0] or a[0].size != weight[0].size:
            raise AdapterError(adapter.path, f"module {module!r}: factors make [{len(b)}, {a[0].size}] but the base's "
                                             f"weight is {list(weight.shape)}")
        out[name] = (weight + adapter.delta(module).reshape(weight.shape)).astype(np.float32)
    return out


def open_model(uri: str, check_finite: bool = True) -> Checkpoint:
    """:func:`~pipeline.checkpoint.reader.open_checkpoint`, or for an adapter folder its declared
    base with the adapter merged in (layout ``peft-adapter``, ``base``: the base's path; the base's
    metadata and config)."""
    if uri.rstrip("/").endswith(WEIGHT_SUFFIXES + (INDEX_SUFFIX,)) or not is_adapter(uri):  # files: no extra stat
        return open_checkpoint(uri, check_finite)
    adapter = open_adapter(uri)
    base = open_checkpoint(base_of(adapter), check_finite)
    merged = Checkpoint(uri, "peft-adapter", merge(adapter, base), base.metadata, base.config, base.file_bytes,
                        base=base.path)
    if check_finite:
        merged.check_finite()
    return merged


def canonical_factors(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A', B')`` with ``B' A' = B A`` (``A [r, in]``, ``B [out, r]``), the same for every
    ``(G^-1 A, B G)``: from the product's SVD ``U S V^T``, ``B' = U sqrt(S)``, ``A' = sqrt(S) V^T``,
    each singular pair's sign fixed by its largest entry of ``U``. Unique where the singular values
    are distinct."""
    r = a.shape[0]
    u, s, vt = np.linalg.svd(b.reshape(len(b), r).astype(np.float64) @ a.reshape(r, -1).astype(np.float64),
                             full_matrices=False)
    u, s, vt = u[:, :r], s[:r], vt[:r]
    signs = np.sign(u[np.abs(u).argmax(0), np.arange(r)])
    signs[signs == 0] = 1.0
    root = np.sqrt(s)
    return (root[:, None] * vt * signs[:, None]).reshape(a.shape), (u * signs * root).reshape(b.shape)
