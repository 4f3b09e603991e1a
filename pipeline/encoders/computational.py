"""Encoders that run on the full computational graph: the ScaleGMN-style and Neural-Graphs-style
encoders are this module with different settings (see :mod:`.scale_gmn`, :mod:`.neural_graphs`)."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pipeline.constants import EMBEDDING_DIM, NUM_PROBES
from pipeline.encoders.bases import edge_bases
from pipeline.encoders.conv import EdgeMessage, SymmetricUpdate
from pipeline.encoders.conv.symmetric_update import canonicalize
from pipeline.encoders.graph_input import GraphInput, stack, stacks
from pipeline.encoders.output_profile import NUM_PROFILE, output_profile
from pipeline.encoders.probes import ProbeInputs
from pipeline.encoders.statistics import NUM_PROBE_STATISTICS, NUM_STATISTICS
from pipeline.graph.schema import NODE_KINDS
from pipeline.numerics import TINY

_SCALED = ("perm_scale", "perm_sign")
_POSITIONAL = (NODE_KINDS.index("input"), NODE_KINDS.index("output"))
_INPUT, _OUTPUT = NODE_KINDS.index("input"), NODE_KINDS.index("output")


def positional_features(count: int, dim: int, dtype=torch.float32) -> torch.Tensor:
    """``[count, dim]`` sinusoidal features of node indices: input and output neurons are not
    interchangeable, so encoders see which one is which."""
    position = torch.arange(count, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-np.log(10000.0) / dim))
    out = torch.zeros(count, dim, dtype=torch.float64)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return out.to(dtype)


class ComputationalGraphEncoder(nn.Module):
    """Message passing over a network's own wiring, swept in topological order (each layer of the
    encoder is one forward pass over the network: every group updates from its freshly updated
    sources; then the input neurons update from the layers that read them), then an invariant
    readout per node group and attention pooling over groups.

    ``scale_aware``: groups keep the per-node factor ``q`` of their symmetry through every layer
    (no additive terms on scaled groups, gated nonlinearity, messages linear in the weights), and
    the readout removes it; else every group gets plain updates (permutation symmetry only).
    Input and output neurons get positional features, so they are not treated as interchangeable.
    ``probes``: output neurons also get their values at fixed probe inputs (:mod:`.executor`; exactly
    invariant, they say what the network computes; the encoder's own ``probe_inputs`` where set, else
    synthetic ones), for the graphs that can be executed, and a
    summary of those values and of how they spread over the outputs (:func:`.output_profile.output_profile`)
    joins the pooled summary directly.
    ``statistics``: a summary of each weight block's moments in the scale canonical form
    (:mod:`.statistics`; exactly invariant, they carry the magnitudes the canonicalized states drop)
    joins the pooled summary too; without ``probes``, its columns computed at the probe inputs are zeroed.

    ``graphs`` (list of :class:`GraphInput`) -> ``[batch, dim]``; models of one architecture among
    them are stacked and embedded as one tensor program (:meth:`forward`), each exactly as alone.
    """

    def __init__(self, dim: int = EMBEDDING_DIM, hidden: int = 128, layers: int = 4, scale_aware: bool = True,
                 bases: tuple[str, ...] = ("w",), max_kernel: int = 9, probes: bool = True,
                 statistics: bool = True):
        super().__init__()
        if scale_aware and bases != ("w",):
            raise ValueError("scale-aware message passing must be linear in the weights: bases=('w',)")
        self.scale_aware, self.bases, self.hidden = scale_aware, bases, hidden
        self.kind = nn.Embedding(len(NODE_KINDS), hidden)
        self.depth = nn.Linear(2, hidden)  # relative depth and log group size: invariant context
        self.bias_in = nn.Parameter(torch.randn(hidden))
        self.norm_in = nn.Linear(4, hidden)
        self.position_in = nn.Linear(hidden, hidden)
        self.probe_inputs = ProbeInputs() if probes else None  # empty unless set (see .probes)
        self.probe_in = nn.Linear(NUM_PROBES, hidden) if probes else None
        self.probe_summary = nn.Sequential(nn.Linear(NUM_PROBES + hidden, hidden), nn.GELU(),
                                           nn.Linear(hidden, hidden)) if probes else None
        self.profile_summary = nn.Sequential(nn.Linear(NUM_PROFILE, hidden), nn.GELU(),
                                             nn.Linear(hidden, hidden)) if probes else None
        self.statistics_summary = nn.Sequential(nn.Linear(NUM_STATISTICS, hidden), nn.GELU(),
                                                nn.Linear(hidden, hidden)) if statistics else None
        self.messages = nn.ModuleList(EdgeMessage(len(bases), hidden, hidden, max_kernel) for _ in range(layers))
        self.input_messages = nn.ModuleList(EdgeMessage(len(bases), hidden, hidden, max_kernel) for _ in range(layers))
        self.skips = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
        self.updates = nn.ModuleList(SymmetricUpdate(hidden) for _ in range(layers))
        self.node_readout = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.readout = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.attention = nn.Linear(hidden, 1)
        self.signature = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.out = nn.Linear(hidden, dim)

    def symmetry(self, graph: GraphInput, index: int) -> str:
        s = graph.groups[index].symmetry
        return s if self.scale_aware else ("perm" if s in _SCALED else s)

    def node_states(self, graph: GraphInput) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Final node states per group ``[count, size, hidden]`` for a :func:`stacked <.graph_input.stack>`
        input (equivariant: permuted and multiplied by ``q`` like the nodes) and the invariant
        per-group context vectors ``[hidden]``."""
        dtype, device = self.bias_in.dtype, self.bias_in.device
        context = [self.kind.weight[g.kind]
                   + self.depth(torch.tensor([g.depth, math.log(g.size)], dtype=dtype, device=device))
                   for g in graph.groups]
        states = [self._initial(graph, i, context[i]) for i in range(len(graph.groups))]
        kept: dict[int, list[torch.Tensor]] = {}

        def bases(k: int) -> list[torch.Tensor] | None:
            """Block ``k``'s edge bases in the encoder's dtype: kept when its weights already are in
            it, else computed again at each use (weights stored at 16 bits stay so in memory)."""
            weight = graph.blocks[k].weight
            if weight is None:
                return None
            if k in kept:
                return kept[k]
            computed = edge_bases(weight.to(dtype), self.bases)
            if weight.dtype == dtype:
                kept[k] = computed
            return computed

        incoming = {i: [k for k, b in enumerate(graph.blocks) if b.dst == i] for i in graph.order}
        inputs = [i for i in graph.order if not incoming[i]]
        outgoing = {i: [k for k, b in enumerate(graph.blocks) if b.src == i and b.weight is not None] for i in inputs}
        for message, input_message, skip, update in zip(self.messages, self.input_messages, self.skips, self.updates):
            for i in graph.order:
                if not incoming[i]:
                    continue
                m = None
                for k in incoming[i]:
                    block, block_bases = graph.blocks[k], bases(k)
                    source = states[block.src] if block.sources is None else states[block.src][:, block.sources]
                    term = skip(source) if block_bases is None else message(block_bases, source)
                    m = term if m is None else m + term
                states[i] = update(states[i], m, self.symmetry(graph, i), context[i])
            for i in inputs:  # input neurons learn how the network reads them (invariant messages)
                terms = [input_message([x.transpose(-3, -2) for x in bases(k)],
                                       self._invariant_source(states[graph.blocks[k].dst],
                                                              self.symmetry(graph, graph.blocks[k].dst)))
                         for k in outgoing[i]]
                if terms:
                    states[i] = update(states[i], sum(terms), "none", context[i])
        return states, context

    @staticmethod
    def _invariant_source(x: torch.Tensor, symmetry: str) -> torch.Tensor:
        """States of a group as seen through its incoming weights ``w_vu`` (which scale by ``q_v``):
        ``x_v / ||x_v||^2`` scales by ``1/q_v`` for positive scaling, so ``w_vu x_v / ||x_v||^2`` is
        invariant; with signs, ``w_vu x_v`` already is (``q_v^2 = 1``)."""
        if symmetry == "perm_scale":
            return x / x.square().sum(-1, keepdim=True).clamp_min(TINY)
        return x

    def _initial(self, graph: GraphInput, i: int, context: torch.Tensor) -> torch.Tensor:
        """``[count, size, hidden]`` initial states of group ``i``."""
        g = graph.groups[i]
        dtype, device = self.bias_in.dtype, self.bias_in.device
        x = (g.bias[..., None] * self.bias_in if g.bias is not None
             else torch.zeros(graph.count, g.size, self.hidden, dtype=dtype, device=device))
        if self.symmetry(graph, i) in _SCALED:
            return x  # scales with q: nothing invariant may be added
        if g.norm is not None:
            x = x + self.norm_in(g.norm)
        if g.kind in _POSITIONAL:
            x = x + self.position_in(positional_features(g.size, self.hidden, dtype).to(device))
        if g.kind == _OUTPUT and self.probe_in is not None and graph.outputs_at_probes is not None:
            x = x + self.probe_in(graph.outputs_at_probes)
        return x + context

    def embed_stacked(self, graph: GraphInput) -> torch.Tensor:
        """``[count, dim]`` embeddings of a :func:`stacked <.graph_input.stack>` input."""
        states, context = self.node_states(graph)
        summaries = torch.stack([
            self.readout(torch.cat([self.node_readout(canonicalize(x, self.symmetry(graph, i))).mean(-2),
                                    context[i].expand(graph.count, -1)], -1))
            for i, x in enumerate(states)])                                     # [groups, count, hidden]
        weights = torch.softmax(self.attention(summaries), dim=0)
        return self.out((weights * summaries).sum(0) + self.signature(self._signature(graph))
                        + self._function(graph) + self._statistics(graph))

    def _function(self, graph: GraphInput) -> torch.Tensor | float:
        """``[count, hidden]`` summary of the outputs at the probe inputs (each output neuron's values
        with its position, mean over outputs, plus their profile across outputs); ``0`` when the
        network has none."""
        if self.probe_summary is None or graph.outputs_at_probes is None:
            return 0.0
        values = graph.outputs_at_probes                                        # [count, n_out, probes]
        position = positional_features(values.shape[-2], self.hidden, values.dtype).to(values.device)
        return (self.probe_summary(torch.cat([values, position.expand(len(values), -1, -1)], -1)).mean(-2)
                + self.profile_summary(torch.stack([output_profile(v) for v in values])))

    def _statistics(self, graph: GraphInput) -> torch.Tensor | float:
        """``[count, hidden]`` mean over weight blocks of their summarized statistics; ``0`` without any."""
        if self.statistics_summary is None or graph.statistics is None:
            return 0.0
        statistics = graph.statistics                                           # [count, blocks, S]
        if self.probe_summary is None:  # without probes: nothing computed from the probe inputs
            statistics = torch.cat([statistics[..., :-NUM_PROBE_STATISTICS],
                                    torch.zeros_like(statistics[..., -NUM_PROBE_STATISTICS:])], -1)
        return self.statistics_summary(statistics).mean(-2)

    def _signature(self, graph: GraphInput) -> torch.Tensor:
        """``[3]`` invariant interface of the network: log widths of its input and output layers, log
        number of node groups."""
        width = lambda kind: sum(g.size for g in graph.groups if g.kind == kind)  # noqa: E731
        values = [math.log1p(width(_INPUT)), math.log1p(width(_OUTPUT)), math.log(len(graph.groups))]
        return torch.tensor(values, dtype=self.bias_in.dtype, device=self.bias_in.device)

    def forward(self, graphs: list[GraphInput]) -> torch.Tensor:
        """``[len(graphs), dim]``: models of one structure embedded together as one stacked input
        (:func:`~.graph_input.stacks`), in the order given."""
        out: list[torch.Tensor | None] = [None] * len(graphs)
        for chunk in stacks(graphs):
            for i, vector in zip(chunk, self.embed_stacked(stack([graphs[i] for i in chunk]))):
                out[i] = vector
        return torch.stack(out)
