"""Pieces shared by the family builders: reading modules out of a state dict, the activation ->
symmetry rule, and an assembler that collects node groups and edge blocks."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from pipeline.checkpoint.reader import natural_key
from pipeline.graph.schema import EdgeBlock, NodeGroup

#: Hidden-neuron symmetry each activation admits (see :mod:`pipeline.graph.schema`).
ACTIVATION_SYMMETRY = {"relu": "perm_scale", "leaky_relu": "perm_scale", "tanh": "perm_sign",
                       "sine": "perm_sign"}

NORM_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def hidden_symmetry(activation: str, normalized: bool) -> str:
    """Symmetry of hidden units with ``activation``; a normalization layer leaves permutation only."""
    return "perm" if normalized else ACTIVATION_SYMMETRY.get(activation, "perm")


@dataclass
class Module:
    """A parametrized layer found in a state dict: ``linear`` (2-D weight), ``conv`` (3-5-D weight)
    or ``norm`` (1-D affine parameters and/or running statistics)."""
    prefix: str
    kind: str
    params: dict[str, str] = field(default_factory=dict)  # leaf ("weight", "bias", ...) -> tensor name

    @property
    def weight(self) -> str:
        return self.params.get("weight", "")

    @property
    def bias(self) -> str:
        return self.params.get("bias", "")


def module_prefix(name: str) -> tuple[str, str]:
    prefix, _, leaf = name.rpartition(".")
    return prefix, leaf


def parse_modules(tensors: dict[str, np.ndarray], names: list[str]) -> list[Module] | None:
    """Group ``names`` (in order) into modules; ``None`` if some tensor is not a standard layer parameter."""
    by_prefix: dict[str, dict[str, str]] = {}
    for name in names:
        prefix, leaf = module_prefix(name)
        if leaf not in NORM_LEAVES:
            return None
        by_prefix.setdefault(prefix, {})[leaf] = name
    modules = []
    for prefix, params in by_prefix.items():
        weight = tensors[params["weight"]] if "weight" in params else None
        if weight is not None and weight.ndim == 2:
            kind = "linear"
        elif weight is not None and 3 <= weight.ndim <= 5:
            kind = "conv"
        elif all(tensors[p].ndim <= 1 for p in params.values()):
            kind = "norm"
        else:
            return None
        if kind != "norm" and (set(params) - {"weight", "bias"}):
            return None
        modules.append(Module(prefix, kind, params))
    return sorted(modules, key=_computation_order)


#: top-level module names of classification heads, which compute last whatever their name sorts as
#: (torchvision's VGG and MobileNet: ``features.N`` then ``classifier.N``; ResNet: ``fc``)
HEAD_MODULES = ("classifier", "fc", "head")


def _computation_order(module: Module):
    """Natural order of prefixes, heads (:data:`HEAD_MODULES`) last, reading ``conv1``/``bn1`` as
    step 1 with the layer before its norm (so torchvision's ``bn1`` follows ``conv1`` although it
    sorts first by name)."""
    head, _, last = module.prefix.rpartition(".")
    step = re.fullmatch(r"[A-Za-z_]+(\d+)", last)
    base = f"{head}.{step.group(1)}" if step else module.prefix
    return (module.prefix.split(".")[0] in HEAD_MODULES, natural_key(base), module.kind == "norm",
            natural_key(module.prefix))


class LayoutMismatch(ValueError):
    """A builder recognized its family's parameters, but they do not fit the family's layout (a
    config that lies about its head count, a parameter missing or left over): the checkpoint falls
    back to a per-layer graph, with this reason recorded."""


def build_or_explain(family: str, build, *args):
    """``build(*args)``, with its ``KeyError`` (a parameter missing) or ``ValueError`` (shapes that
    do not fit) turned into a :class:`LayoutMismatch` naming ``family`` and the reason."""
    try:
        return build(*args)
    except KeyError as exc:
        raise LayoutMismatch(f"{family}: missing parameter {exc.args[0]!r}") from None
    except ValueError as exc:
        raise LayoutMismatch(f"{family}: {exc}") from None


class GraphAssembler:
    """Collects node groups and edge blocks; builders call :meth:`group` and :meth:`edge`."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = tensors
        self.groups: list[NodeGroup] = []
        self.blocks: list[EdgeBlock] = []

    def group(self, name: str, size: int, kind: str, layer: int, **kw) -> int:
        self.groups.append(NodeGroup(name=name, size=int(size), kind=kind, layer=layer, **kw).validate())
        return len(self.groups) - 1

    def replace(self, index: int, **changes) -> None:
        self.groups[index] = self.groups[index]._replace(**changes).validate()

    def edge(self, src: int, dst: int, kind: str, tensor: str = "", name: str = "") -> None:
        name = name or tensor or f"{self.groups[src].name}->{self.groups[dst].name}"
        self.blocks.append(EdgeBlock(name, src, dst, kind, tensor).validate())

    def used_tensors(self) -> set[str]:
        used = {b.tensor for b in self.blocks if b.tensor}
        for g in self.groups:
            used.update(t for t in (g.bias, *g.norm) if t)
        return used

    def need(self, name: str) -> str:
        """``name``, a tensor the layout requires (``KeyError`` if absent)."""
        if name not in self.tensors:
            raise KeyError(name)
        return name

    def optional(self, name: str) -> str:
        """``name`` if the state dict has it, else ``""``."""
        return name if name in self.tensors else ""

    def norm(self, prefix: str) -> tuple[str, ...]:
        """The ``weight`` and ``bias`` of the normalization layer ``prefix`` that exist."""
        return tuple(t for t in (self.optional(f"{prefix}.weight"), self.optional(f"{prefix}.bias")) if t)

    def pre_norm(self, name: str, src: int, layer: int) -> int:
        """A pre-norm layer (``name.weight``, optional ``name.bias``) as a group of its own in the
        residual stream's permutation, fed by ``src`` through a residual block."""
        g = self.group(name, self.groups[src].size, "stream", layer, symmetry="perm", perm_group="stream",
                       norm=self.norm(name))
        self.edge(src, g, "residual", name=f"{name}.residual")
        return g

    def check_all_used(self, names: list[str], ignore=lambda name: False) -> None:
        """``ValueError`` naming the first parameter the graph does not use (``ignore``: buffers and
        tied copies a layout may carry)."""
        used = self.used_tensors()
        unused = next((n for n in names if n not in used and not ignore(n)), None)
        if unused is not None:
            raise ValueError(f"parameter {unused!r} has no place in the layout")

    def dense(self, name: str, src: int, size: int, kind: str, layer: int, **kw) -> int:
        """A group fed from group ``src`` by the dense layer ``name`` (``name.weight`` ``[out, in]``,
        optional ``name.bias``); ``size``: its required width (0: any). ``ValueError`` on a shape
        that does not fit."""
        w = self.tensors[self.need(f"{name}.weight")]
        if w.ndim != 2 or w.shape[1] != self.groups[src].size or (size and w.shape[0] != size):
            raise ValueError(name)
        g = self.group(name, w.shape[0], kind, layer, bias=self.optional(f"{name}.bias"), **kw)
        self.edge(src, g, "linear", f"{name}.weight")
        return g


    def conv(self, weight: str, norm: str, src: int, layer: int, perm_group: str = "", **heads) -> int:
        """A group fed from group ``src`` by the 2-D convolution ``weight`` followed by the BatchNorm
        ``norm`` (its ``weight``, ``bias``, running mean and variance: the group's channels permute,
        unscaled). By the weight's shape: ``[out, in, k, k]`` dense; ``[n, 1, k, k]`` reading ``n``
        channels, depthwise (the new group shares the source's permutation); ``[out, in/g, k, k]``,
        grouped (the source must have ``heads = g`` with ``fixed`` head dims; the new group gets its
        head group). ``heads``: the new group's head fields, for a group a grouped convolution will
        read. ``ValueError`` on shapes that do not fit."""
        w = self.tensors[self.need(weight)]
        source = self.groups[src]
        stats = tuple(self.need(f"{norm}.{leaf}") for leaf in NORM_LEAVES[:4])
        if w.ndim != 4 or any(self.tensors[n].shape != (w.shape[0],) for n in stats):
            raise ValueError(f"{weight}: shape {list(w.shape)} or its BatchNorm")
        if w.shape[1] == source.size:
            kind = "linear"
        elif w.shape[1] == 1 and w.shape[0] == source.size and source.perm_group:
            kind, perm_group = "depthwise", source.perm_group
            heads = dict(heads=source.heads, head_group=source.head_group, head_dims=source.head_dims)
        elif (source.size % w.shape[1] == 0 and source.heads == source.size // w.shape[1] > 1
              and source.head_dims == "fixed" and w.shape[0] % source.heads == 0):
            kind, heads = "grouped", dict(heads=source.heads, head_group=source.head_group)
        else:
            raise ValueError(f"{weight}: shape {list(w.shape)} does not read {source.size} channels")
        g = self.group(weight.removesuffix(".weight"), w.shape[0], "hidden", layer, symmetry="perm",
                       perm_group=perm_group, norm=stats, **heads)
        self.edge(src, g, kind, weight)
        return g

    def hf_conv(self, name: str, src: int, layer: int, perm_group: str = "", **heads) -> int:
        """:meth:`conv` with ``transformers``' CNN names: ``name.convolution`` and ``name.normalization``."""
        return self.conv(f"{name}.convolution.weight", f"{name}.normalization", src, layer, perm_group, **heads)

    def squeeze_excite(self, reduce: str, expand: str, channels: int, layer: int, symmetry: str) -> int:
        """Squeeze-and-excitation of group ``channels``: the ``reduce`` 1x1 convolution (with bias)
        on the pooled channels (its units: ``symmetry``), ``expand`` back to one unit per channel (in
        the channels' permutation), whose sigmoids multiply the channels (a ``gate`` block); returns
        the gated channels' group."""
        source = self.groups[channels]
        same = dict(symmetry="perm", perm_group=source.perm_group, heads=source.heads, head_group=source.head_group,
                    head_dims=source.head_dims)  # the channels' own permutation
        size = source.size
        down, up = self.tensors[self.need(f"{reduce}.weight")], self.tensors[self.need(f"{expand}.weight")]
        if down.ndim != 4 or down.shape[1:] != (size, 1, 1) or up.shape != (size, down.shape[0], 1, 1):
            raise ValueError(f"{reduce}: squeeze-and-excitation shapes {list(down.shape)}, {list(up.shape)}")
        r = self.group(reduce, down.shape[0], "hidden", layer, symmetry=symmetry, bias=self.optional(f"{reduce}.bias"))
        self.edge(channels, r, "linear", f"{reduce}.weight")
        e = self.group(expand, size, "hidden", layer + 1, bias=self.optional(f"{expand}.bias"), **same)
        self.edge(r, e, "linear", f"{expand}.weight")
        gated = self.group(f"{expand}.gated", size, "hidden", layer + 1, **same)
        self.edge(channels, gated, "residual", name=f"{expand}.channels")
        self.edge(e, gated, "gate", name=f"{expand}.gate")
        return gated


@dataclass(frozen=True)
class PreNormLayer:
    """Where a pre-norm transformer layer (ViT, GPT-2) keeps its parameters, relative to the layer's
    prefix: two norms, query/key/value, the attention output, the MLP's two dense layers."""
    norm1: str
    query: str
    key: str
    value: str
    attention_out: str
    norm2: str
    fc1: str
    fc2: str


def pre_norm_layer(asm: GraphAssembler, L: str, names: PreNormLayer, stream: int, depth: int, hidden: int,
                   heads: int, activation: str) -> int:
    """Wire one pre-norm layer (prefix ``L``) on stream group ``stream`` at ``depth``: each norm a
    group of the stream's permutation fed by a residual block; query, key and value groups of
    ``heads`` heads (query and key units permute together); the attention output and the MLP
    output are stream groups with a residual from the stream before them; the MLP's units follow
    ``activation``. Returns the layer's output stream group (at ``depth + 6``)."""
    before = asm.pre_norm(f"{L}{names.norm1}", stream, depth + 1)
    qkv = [asm.dense(f"{L}{part}", before, hidden, kind, depth + 2, symmetry="perm", perm_group=f"{L}{perm}",
                     heads=heads, head_group=f"{L}heads")
           for part, kind, perm in ((names.query, "query", "qk"), (names.key, "key", "qk"), (names.value, "value", "v"))]
    attn = asm.dense(f"{L}{names.attention_out}", qkv[2], hidden, "stream", depth + 3, symmetry="perm",
                     perm_group="stream")
    asm.edge(stream, attn, "residual", name=f"{L}attention.residual")
    after = asm.pre_norm(f"{L}{names.norm2}", attn, depth + 4)
    inter = asm.dense(f"{L}{names.fc1}", after, 0, "hidden", depth + 5, symmetry=hidden_symmetry(activation, False))
    out = asm.dense(f"{L}{names.fc2}", inter, hidden, "stream", depth + 6, symmetry="perm", perm_group="stream")
    asm.edge(attn, out, "residual", name=f"{L}output.residual")
    return out


def model_prefix(pattern: re.Pattern, names: list[str]) -> str | None:
    """Group 1 of the first name ``pattern`` matches (the prefix a model's parameters share, e.g.
    ``bert.`` or ``model.``), or ``None``."""
    return next((m.group(1) for m in map(pattern.match, names) if m), None)


def layer_indices(names: list[str], layers: str) -> list[int]:
    """The sorted indices ``N`` of the parameters named ``<layers>N.<...>``."""
    return sorted({int(m.group(1)) for m in (re.match(rf"^{re.escape(layers)}(\d+)\.", n) for n in names) if m})


def attention_heads(width: int, num_heads: int | None) -> int:
    """Heads of an attention layer ``width`` wide: the hint, else one per 64 units (the common head
    width), else one. ``ValueError`` when the hint does not divide the width."""
    heads = num_heads or (width // 64 if width % 64 == 0 else 1)
    if width % heads:
        raise ValueError(f"{heads} heads do not divide the attention width {width}")
    return heads


def chain(asm: GraphAssembler, modules: list[Module], src: int, layer: int, activation: str,
          prefix: str = "") -> tuple[int, int] | None:
    """Wire a chain of linear/conv/norm modules starting from group ``src``.

    Each weight module makes a new hidden group fed by the current one; a norm module attaches its
    parameters to the current group (and leaves it permutation-only). Returns ``(last group, last
    layer)`` or ``None`` if shapes do not chain. Callers re-label the last group (output, stream...).
    """
    current, spatial = src, False
    for module in modules:
        size = asm.groups[current].size
        if module.kind == "norm":
            shapes = {asm.tensors[p].size for leaf, p in module.params.items() if leaf != "num_batches_tracked"}
            if current == src or shapes != {size}:
                return None
            norm = tuple(module.params[k] for k in NORM_LEAVES[:4] if k in module.params)
            asm.replace(current, norm=norm, symmetry=hidden_symmetry(activation, True))
            continue
        w = asm.tensors[module.weight]
        fan_in = w.shape[1]
        if module.kind == "linear" and spatial and fan_in != size and fan_in % size == 0:
            kind = "flatten"
        elif fan_in == size:
            kind = "linear"
        else:
            return None
        if module.bias and asm.tensors[module.bias].shape != (w.shape[0],):
            return None
        layer += 1
        new = asm.group(module.prefix or f"{prefix}layer{layer}", w.shape[0], "hidden", layer,
                        symmetry=hidden_symmetry(activation, False), bias=module.bias)
        asm.edge(current, new, kind, module.weight)
        current, spatial = new, module.kind == "conv"
    return current, layer
