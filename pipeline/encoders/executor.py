"""The network executor: the one interpreter of a :class:`GraphInput` as the network it describes.

:func:`execute` sweeps the groups in topological order: each group's values are the sum of what its
incoming blocks send from their sources' values (times its ``gate`` sources' values), plus its bias,
passed through the activation. Two readings use it:

* :func:`probe_values` runs the network at the probe inputs (:mod:`.probes`). A network's outputs
  there are unchanged by every symmetry of its hidden neurons (coupled permutations, positive
  scalings, sign flips), so they are exactly invariant features, and they change with the function,
  e.g. under an uncoupled permutation. Executed: computational graphs of dense layers and 2-D
  convolutions with odd square kernels (MLPs, residual MLPs, Small-CNN-Zoo CNNs) without
  normalization, with a known elementwise activation, applied after every hidden group and after a
  residual stream that no skip connection feeds (the stem's output). Convolutions run with stride 1
  and "same" zero padding on the probe images, and a dense layer after a convolution reads its
  global average pool. Stride and padding are not in the weights: for a network built otherwise
  the values are not its outputs, but they stay exactly invariant functions of its weights. Other
  graphs (flattened feature maps, attention, sine networks whose frequency ``w0`` the weights do not
  record) get no probe values, nor do networks whose pass would cost more than ``MAX_PROBE_MACS``.
* :func:`network_outputs` runs the same networks and sine networks (SIRENs, at ``SIREN_W0``) for
  checks of what two networks compute: a sine network's outputs at any frequency are invariant to its
  group (permutations and sign flips), so two copies agree whatever the real ``w0``.
* :func:`linear_response` runs any graph *linearly*: no activation, every block a dense map by its
  weights summed over the edge features (a convolution's kernel sum; a depthwise one scales each
  channel), gates adding their values. Its value at basis inputs is the product of the weights
  along every input-output path, the network's wiring.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from pipeline.constants import NUM_PROBES
from pipeline.encoders.graph_input import Block, GraphInput
from pipeline.encoders.probes import DEFAULT_PROBES, ProbeInputs
from pipeline.graph.schema import GROUPED_EDGES, NODE_KINDS, repeat_sources
from pipeline.numerics import TINY

#: probe passes costing more multiply-adds (about a second on one core, in float64) are skipped:
#: large CNNs, whose every weight is applied at every pixel of every probe image
MAX_PROBE_MACS = 1e10
ACTIVATIONS = {"relu": F.relu, "relu6": F.relu6, "tanh": torch.tanh, "gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid,
               "elu": F.elu, "softplus": F.softplus}
#: SIREN's frequency: ``sin(w0 * (W x + b))`` between layers (the weights do not record it)
SIREN_W0 = 30.0
#: what :func:`network_outputs` runs: the encoders' activations and sine
FUNCTION_ACTIVATIONS = {**ACTIVATIONS, "sine": lambda x: torch.sin(SIREN_W0 * x)}
#: input groups wider than this (token vocabularies) are left out of the linear response, and no
#: response is computed from more input neurons in all
MAX_RESPONSE_INPUTS = 4096
#: residual branches on wider streams get no spectrum (:func:`branch_spectra`: one SVD of this side)
MAX_BRANCH_WIDTH = 1024
#: powers whose traces join a branch's singular values
BRANCH_TRACES = 8
#: a circuit reads about this many inputs (and the biases): its size is about this squared
CIRCUIT_INPUTS = 16
_HIDDEN, _STREAM, _OUTPUT = (NODE_KINDS.index(k) for k in ("hidden", "stream", "output"))


def _is_conv(block: Block) -> bool:
    """A 2-D convolution (dense or depthwise) with an odd square kernel."""
    return block.kind in ("linear", *GROUPED_EDGES) and len(block.kernel) == 2 \
        and block.kernel[0] == block.kernel[1] and block.kernel[0] % 2 == 1


def _message(block: Block, x: torch.Tensor, linear: bool, lead: int = 0) -> torch.Tensor | None:
    """What ``block`` sends from its source's values ``x`` (``[*lead, P, C]`` or ``[*lead, P, C, H, W]``;
    ``lead``: 1 for a stacked input, whose weights lead with the model dimension too), or ``None``
    when a convolution would read pooled values. ``linear``: every weighted block is the dense map of
    its weights summed over the edge features."""
    if block.kind in ("residual", "gate"):
        return x
    if block.kind == "repeat":  # a key/value head's units, to every query head it serves
        return x.index_select(lead + 1, block.sources)
    w = block.weight.to(x.dtype)                                         # [*lead, dst, src / groups, F]
    groups = x.shape[lead + 1] // w.shape[-2]  # 1 but for grouped and depthwise blocks
    if linear:
        summed = w.sum(-1)
        if groups == 1:
            return x @ summed.transpose(-1, -2)
        return torch.einsum("...rgi,...goi->...rgo", x.reshape(*x.shape[:-1], groups, -1),
                            summed.reshape(*summed.shape[:-2], groups, -1, summed.shape[-1])).reshape(*x.shape[:-1], -1)
    spatial = x.ndim - lead - 2
    if _is_conv(block):
        if spatial != 2:
            return None
        k = block.kernel[0]
        conv = lambda a, b: F.conv2d(a, b.reshape(*b.shape[:2], k, k), padding=k // 2, groups=groups)  # noqa: E731
        # model by model: one grouped convolution over a stack is slower on CPUs
        return conv(x, w) if not lead else torch.stack([conv(a, b) for a, b in zip(x, w)])
    if spatial == 2:  # a dense layer after a convolution reads the global average pool
        x = x.mean((-2, -1))
    return x @ w[..., 0].transpose(-1, -2)


@torch.no_grad()
def execute(graph: GraphInput, inputs: dict[int, torch.Tensor],
            activation: Callable[[torch.Tensor], torch.Tensor] | None,
            within: set[int] | None = None) -> dict[int, torch.Tensor] | None:
    """Every group's values (``[P, size]`` or ``[P, size, H, W]``, in the inputs' dtype; with a
    leading model dimension for a :func:`stacked <pipeline.encoders.graph_input.stack>` input) given
    ``inputs``, the values of some source groups (``P`` rows each). A group's value is the sum of its incoming
    blocks' messages from the groups that have values (times its ``gate`` sources' values, channel
    by channel), plus its bias, through ``activation`` for
    hidden groups and for streams no skip connection feeds; groups nothing reaches have none, nor
    do groups outside ``within`` (default: all).
    ``activation=None``: the linear reading (see the module docstring). ``None`` when the blocks'
    messages do not fit together (a convolution fed pooled values, mismatched shapes)."""
    values, lead = dict(inputs), int(graph.count is not None)
    for i in graph.order:
        incoming = [b for b in graph.blocks if b.dst == i and b.src in values]
        if i in values or not incoming or (within is not None and i not in within):
            continue
        # the linear reading adds gates (a product of responses is no linear one) and multiplies nothing
        linear = activation is None
        messages = [_message(b, values[b.src], linear, lead) for b in incoming if linear or b.kind != "gate"]
        gates = [_message(b, values[b.src], linear, lead) for b in incoming if not linear and b.kind == "gate"]
        if any(m is None for m in messages + gates) or len({m.shape for m in messages}) > 1:
            return None
        x = sum(messages)
        for gate in gates:  # a per-channel factor of the group's values (squeeze-and-excitation)
            if gate.shape != x.shape[:gate.ndim]:
                return None
            x = x * gate.reshape(*gate.shape, *[1] * (x.ndim - gate.ndim))
        g = graph.groups[i]
        if g.bias is not None:
            x = x + g.bias.to(x.dtype).reshape(*g.bias.shape[:-1], 1, -1, *[1] * (x.ndim - lead - 2))
        if activation is not None and (g.kind == _HIDDEN or (g.kind == _STREAM and
                                                              all(b.kind != "residual" for b in incoming))):
            x = activation(x)
        values[i] = x
    return values


def branch_spectra(graph: GraphInput) -> list[torch.Tensor]:
    """Per residual branch, ``[n + BRANCH_TRACES]`` float64: the singular values of its linear map
    ``M`` (``n x n``, read linearly as :func:`linear_response` reads: what the branch adds to a
    stream group of ``n`` units, as a function of the stream it starts from; streams of at most
    ``MAX_BRANCH_WIDTH``), then ``tr((M / s_max)^k)`` for ``k = 1 .. BRANCH_TRACES``. The stream's
    permutation acts as ``P M P^T``, which keeps both; a layer inside the branch permuted alone
    changes them (singular values for inner layers, traces also for the last), however deep the
    branch, where the input-basis responses of deep layers have collapsed onto a few directions."""
    out = []
    for i, g in enumerate(graph.groups):
        skips = [b for b in graph.blocks if b.dst == i and b.kind == "residual"]
        if graph.mode != "computational" or len(skips) != 1 or g.size > MAX_BRANCH_WIDTH \
                or len(skips) == sum(b.dst == i for b in graph.blocks) or g.symmetry == "perm_scale":
            continue
        source = skips[0].src
        between = _reachable(graph, source, True) & _reachable(graph, i, False)
        x = torch.cat([torch.eye(g.size, dtype=torch.float64), torch.zeros(1, g.size, dtype=torch.float64)])
        values = execute(graph, {source: x}, None, between | {i})
        if values is None or i not in values or values[i].ndim != 2:
            continue
        branch = (values[i][:-1] - values[i][-1] - x[:-1]).T  # less the biases and the skip: M, [out, in]
        singular = torch.linalg.svdvals(branch)
        power, traces = torch.eye(g.size, dtype=torch.float64), []
        for _ in range(BRANCH_TRACES):  # tr((M / |M|)^k): what left or right permutations alone change
            power = power @ branch / singular[0].clamp_min(TINY)
            traces.append(torch.trace(power))
        out.append(torch.cat([singular, torch.stack(traces)]))
    return out


def _reachable(graph: GraphInput, start: int, forward: bool) -> set[int]:
    """The groups reachable from ``start`` along the blocks (against them if not ``forward``)."""
    seen, stack = set(), [start]
    while stack:
        j = stack.pop()
        for b in graph.blocks:
            a, c = (b.src, b.dst) if forward else (b.dst, b.src)
            if a == j and c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


def executable(graph: GraphInput, activations: dict = ACTIVATIONS) -> bool:
    """Whether :func:`probe_values` can run this graph's layers with ``activations`` (shapes and
    the cost of the pass are checked as it runs)."""
    return (graph.activation in activations and all(g.norm is None for g in graph.groups)
            and sum(g.kind == _OUTPUT for g in graph.groups) == 1
            and all(b.kind == "residual" or (b.kind == "linear" and not b.kernel) or _is_conv(b)
                    for b in graph.blocks))


def probe_values(graph: GraphInput, probes: ProbeInputs | None = None, activations: dict = ACTIVATIONS,
                 dtype: torch.dtype = torch.float64) -> dict[int, torch.Tensor] | None:
    """Every group's values at the probe inputs, after its activation (``dtype``: the encoders run
    the pass in their own, float64 elsewhere; ``[NUM_PROBES, size]`` or ``[NUM_PROBES, size, H, W]``
    for convolutions, after a model dimension for a :func:`stacked <pipeline.encoders.graph_input.stack>`
    input), or ``None`` when the graph is not
    :func:`executable` or its pass would cost more than ``MAX_PROBE_MACS``. ``probes``: the
    encoder's :class:`ProbeInputs` (default: none of its own); ``activations``: the activation
    functions by name (the encoders read :data:`ACTIVATIONS`). Equivariant: a symmetry of the hidden
    neurons permutes, scales or flips their values the same way, and leaves the inputs' and
    outputs' unchanged."""
    if not executable(graph, activations):
        return None
    probes = DEFAULT_PROBES if probes is None else probes
    sources = [i for i in graph.order if all(b.dst != i for b in graph.blocks)]
    inputs = {i: (probes.images(graph.groups[i].size) if any(_is_conv(b) for b in graph.blocks if b.src == i)
                  else probes.dense(graph.groups[i].size)).to(dtype) for i in sources}
    pixels = max((x.shape[2] * x.shape[3] for x in inputs.values() if x.ndim == 4), default=1)
    if NUM_PROBES * sum(b.weight.numel() // (graph.count or 1) * (pixels if _is_conv(b) else 1)
                        for b in graph.blocks if b.weight is not None) > MAX_PROBE_MACS:
        return None
    lead = int(graph.count is not None)
    if lead:
        inputs = {i: x.expand(graph.count, *x.shape) for i, x in inputs.items()}
    values = execute(graph, inputs, activations[graph.activation])
    output = next(i for i, g in enumerate(graph.groups) if g.kind == _OUTPUT)
    return values if values is not None and values[output].ndim == 2 + lead else None


def probe_outputs(graph: GraphInput, values: dict[int, torch.Tensor] | None) -> torch.Tensor | None:
    """``[n_out, NUM_PROBES]`` (``[count, n_out, NUM_PROBES]`` for a stacked input): each output
    neuron's values at the probe inputs (from :func:`probe_values`), squashed by ``asinh`` so logits
    and regression outputs share a range; ``None`` without values. Invariant to every hidden-neuron symmetry of the network."""
    if values is None:
        return None
    output = next(i for i, g in enumerate(graph.groups) if g.kind == _OUTPUT)
    return torch.asinh(values[output]).transpose(-1, -2).contiguous()


def network_outputs(graph: GraphInput, probes: ProbeInputs | None = None) -> torch.Tensor | None:
    """``[n_out, NUM_PROBES]`` float64: what the network computes at the probe inputs (asinh-squashed,
    as :func:`probe_outputs`), sine networks included (:data:`FUNCTION_ACTIVATIONS`); ``None`` when
    it cannot be run. Reuses the encoders' pass where the graph carries it."""
    if graph.outputs_at_probes is not None:
        return graph.outputs_at_probes.double()
    return probe_outputs(graph, probe_values(graph, probes, FUNCTION_ACTIVATIONS))


@torch.no_grad()
def linear_response(graph: GraphInput) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The network's wiring, read linearly: ``(outputs, circuits)``.

    ``outputs``, per output group (in group order), ``[size, n_in + 1]`` float64: each output
    neuron's linear response to each input neuron (the weights multiplied along every path,
    activations left out, conv kernels summed) and, last, the response to the biases alone.
    ``circuits``, ``[m + 1, m + 1]`` each, between ``m`` inputs (the first ``CIRCUIT_INPUTS / n`` of
    each of the ``n`` input groups) and the biases, where residual paths would drown a layer's part
    in the outputs' response:

    * per attention layer (:attr:`GraphInput.attention`), its query-key circuit ``sum_h Q_h K_h^T``
      (``Q_h``, ``K_h`` head ``h``'s query and key units' linear responses, each key/value head's
      keys repeated for the query heads it serves): where attention looks, which no output sees
      linearly; where the layer has a relative position bias ``b_h`` (``[buckets]`` per head), also
      ``sum_h diag(Q_h K_h^T) b_h^T`` (``[m + 1, buckets]``), which ties each head to its bias;
    * per group that adds a branch to a residual path (not rescalable), ``S B^T``: the responses of
      its skip ``S`` against those of its branch ``B`` (what the weighted blocks and gates add);
    * per gated unit layer (:attr:`GraphInput.gates`), ``G (V / |V|)^T``: the gate units' responses
      against the value units' (each unit's column scaled to unit norm, which removes its positive
      scaling), as the gate multiplies its value unit, which no linear reading does.

    Inputs are the groups no block feeds, of at most ``MAX_RESPONSE_INPUTS`` neurons, concatenated in
    group order (none for a per-layer graph, or where they add up to more than
    ``MAX_RESPONSE_INPUTS``); an output no input reaches is left out. Hidden neurons are summed
    over, so both are exactly invariant to their permutations, sign flips and positive scalings
    (``q`` and ``1/q`` cancel along each path; coupled units and heads cancel in the circuits)."""
    sources = sorted(i for i in graph.order if all(b.dst != i for b in graph.blocks)
                     and graph.groups[i].size <= MAX_RESPONSE_INPUTS)
    width = sum(graph.groups[i].size for i in sources)
    if graph.mode != "computational" or width > MAX_RESPONSE_INPUTS:
        return [], []  # per-layer graphs have no wiring; too many inputs: the basis alone would not fit
    inputs, offset, rows = {}, 0, []
    for i in sources:  # basis inputs e_k, then a zero input row that carries the biases alone
        size = graph.groups[i].size
        inputs[i] = torch.zeros(width + 1, size, dtype=torch.float64)
        inputs[i][offset:offset + size] = torch.eye(size, dtype=torch.float64)
        rows += range(offset, offset + min(size, max(1, CIRCUIT_INPUTS // len(sources))))
        offset += size
    rows = torch.tensor(rows + [width])  # the circuits' inputs: the first of each input group
    values = execute(graph, inputs, None)
    outputs = []
    for i, g in enumerate(graph.groups):
        if g.kind == _OUTPUT and i in values:
            bias = values[i][width]
            outputs.append(torch.cat([(values[i][:width] - bias).T, bias[:, None]], 1))
    circuits = []
    for i, g in enumerate(graph.groups):  # branches joining a residual path
        skips = [b for b in graph.blocks if b.dst == i and b.kind == "residual" and b.src in values]
        if i in values and skips and len(skips) < sum(b.dst == i for b in graph.blocks) and g.symmetry != "perm_scale":
            skip = sum(values[b.src] for b in skips)
            if skip.ndim == 2:
                circuits.append(skip[rows] @ (values[i] - skip)[rows].T)
    for gate, value in graph.gates:  # each unit's gate against its value, whose scale is divided out
        if gate in values and value in values and values[gate].ndim == values[value].ndim == 2:
            unit = values[value][rows]
            circuits.append(values[gate][rows] @ (unit / unit.norm(dim=0).clamp_min(TINY)).T)
    for q, k, position in graph.attention:
        if q in values and k in values and values[q].ndim == values[k].ndim == 2:
            query, key = graph.groups[q], graph.groups[k]
            keys = values[k][:, torch.from_numpy(repeat_sources(key.size, key.heads, query.heads))]
            q_rows = values[q][rows].reshape(len(rows), query.heads, -1)
            k_rows = keys[rows].reshape(len(rows), query.heads, -1)
            circuits.append(torch.einsum("rhd,shd->rs", q_rows, k_rows))
            bias = next((b.weight for b in graph.blocks if b.dst == position and b.weight is not None), None)
            if bias is not None:  # heads move with their position bias: each head's bias by its circuit
                bias = bias.double().reshape(bias.shape[0], -1).repeat_interleave(query.heads // bias.shape[0], 0)
                circuits.append(torch.einsum("rhd,rhd,hb->rb", q_rows, k_rows, bias))
    return outputs, circuits
