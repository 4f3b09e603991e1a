"""What a state dict cannot say about itself: its activation, its family, its attention head count.

Hints come from four places, the first that sets a key winning:

1. the checkpoint's own metadata (safetensors ``__metadata__``: ``activation``, ``family``,
   ``num_attention_heads``);
2. its ``config.json`` (``hidden_act`` or ``activation``, ``num_attention_heads``);
3. a *sidecar* file, :data:`SIDECAR`, in the checkpoint's folder: a JSON object mapping glob
   patterns of checkpoint names (a file's name, or a model folder's name) to hints, e.g.
   ``{"*.pt": {"activation": "relu"}, "bert-*": {"family": "transformer", "num_heads": 4}}``;
   every matching pattern applies, later ones over earlier ones;
4. the command line (``--activation``, ``--family``), the default for everything else.

A graph records its hints and where each came from (``info["hints"]``: key -> ``[value, source]``);
ingestion copies them to the manifest. A bad hint (unknown key or value, a sidecar that is not a
JSON object of objects) raises :class:`~pipeline.checkpoint.errors.InvalidHints` naming the file.
"""
from __future__ import annotations

import fnmatch
import json
import posixpath

from pipeline.checkpoint.errors import InvalidHints
from pipeline.checkpoint.reader import Checkpoint
from pipeline.storage import exists, read_bytes

SIDECAR = "weightzoo-hints.json"
#: Activation names as written in metadata, config.json or hints -> the canonical name.
ACTIVATION_ALIASES = {
    "relu": "relu", "leaky_relu": "leaky_relu", "leakyrelu": "leaky_relu", "relu6": "relu6",
    "tanh": "tanh", "sine": "sine", "sin": "sine", "siren": "sine",
    "gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "silu": "silu", "swish": "silu",
    "sigmoid": "sigmoid", "elu": "elu", "softplus": "softplus",
}
#: Families a hint may name (what the builders recognize).
FAMILY_HINTS = ("mlp", "inr", "cnn", "resnet", "transformer")
HINT_KEYS = ("activation", "family", "num_heads")
#: Where hints come from, strongest first.
SOURCES = ("metadata", "config.json", "sidecar", "command line")


def canonical_activation(name: str | None) -> str:
    """The canonical activation name, ``unknown`` for none or one we do not know."""
    return ACTIVATION_ALIASES.get(str(name).lower().replace("-", "_"), "unknown") if name else "unknown"


def check_hints(hints: dict, where: str) -> dict:
    """``hints`` validated and normalized (canonical activation, int head count); raises
    :class:`InvalidHints` naming ``where`` and the reason."""
    if not isinstance(hints, dict):
        raise InvalidHints(where, f"hints must be a JSON object, got {type(hints).__name__}")
    unknown = sorted(set(hints) - set(HINT_KEYS))
    if unknown:
        raise InvalidHints(where, f"unknown hint {unknown[0]!r}; hints are {', '.join(HINT_KEYS)}")
    out = {}
    if hints.get("activation") is not None:
        out["activation"] = canonical_activation(hints["activation"])
        if out["activation"] == "unknown":
            raise InvalidHints(where, f"unknown activation {hints['activation']!r}; "
                                      f"known: {', '.join(sorted(ACTIVATION_ALIASES))}")
    if hints.get("family") is not None:
        if hints["family"] not in FAMILY_HINTS:
            raise InvalidHints(where, f"unknown family {hints['family']!r}; known: {', '.join(FAMILY_HINTS)}")
        out["family"] = hints["family"]
    if hints.get("num_heads") is not None:
        heads = hints["num_heads"]
        if isinstance(heads, bool) or not str(heads).isdigit() or int(heads) < 1:
            raise InvalidHints(where, f"num_heads must be a positive integer, got {heads!r}")
        out["num_heads"] = int(heads)
    return out


def parse_sidecar(data: bytes, where: str) -> list[tuple[str, dict]]:
    """A sidecar file's ``(pattern, hints)`` pairs, in file order."""
    try:
        mapping = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidHints(where, f"not JSON: {exc}") from None
    if not isinstance(mapping, dict):
        raise InvalidHints(where, "a sidecar is a JSON object mapping glob patterns to hints")
    return [(pattern, check_hints(hints, f"{where} [{pattern!r}]")) for pattern, hints in mapping.items()]


def sidecar_hints(rules: list[tuple[str, dict]], checkpoint_uri: str) -> dict:
    """The hints of the sidecar ``rules`` that apply to a checkpoint (its name matched against each
    pattern; later matches over earlier ones)."""
    name = posixpath.basename(checkpoint_uri.rstrip("/"))
    out: dict = {}
    for pattern, hints in rules:
        if fnmatch.fnmatchcase(name, pattern):
            out.update(hints)
    return out


def _own_hints(ckpt: Checkpoint) -> list[tuple[str, dict]]:
    meta, config = ckpt.metadata, ckpt.config or {}
    heads = meta.get("num_attention_heads")
    config_heads = config.get("num_attention_heads") or config.get("n_heads") or config.get("n_head")
    return [("metadata", {"activation": meta.get("activation") or None, "family": meta.get("family") or None,
                          "num_heads": int(heads) if str(heads).isdigit() else None}),
            ("config.json", {"activation": config.get("hidden_act") or config.get("activation")
                                            or config.get("activation_function") or None,
                             "num_heads": int(config_heads) if str(config_heads).isdigit() else None})]


def resolve_hints(ckpt: Checkpoint, sidecar: dict | None = None, command_line: dict | None = None) -> dict:
    """Each hint key -> ``(value, source)`` by the precedence of the module docstring; keys no source
    sets are absent. The checkpoint's own activation names are canonicalized, not validated (an
    unknown one reads as ``unknown``); ``sidecar`` and ``command_line`` must be :func:`check_hints`'ed."""
    layers = [*_own_hints(ckpt), ("sidecar", sidecar or {}), ("command line", command_line or {})]
    resolved: dict = {}
    for source, hints in layers:
        for key, value in hints.items():
            if key == "activation":
                value = None if canonical_activation(value) == "unknown" else canonical_activation(value)
            if value is not None and key not in resolved:
                resolved[key] = (value, source)
    return resolved


class Sidecars:
    """The sidecar hints of checkpoints, each folder's :data:`SIDECAR` read once (by path or URI)."""

    def __init__(self):
        self._rules: dict[str, list[tuple[str, dict]] | InvalidHints] = {}

    def hints_for(self, checkpoint_uri: str) -> dict:
        """The sidecar hints that apply to a checkpoint (``{}`` without a sidecar); raises
        :class:`InvalidHints` when its folder's sidecar is malformed."""
        folder = posixpath.dirname(checkpoint_uri.rstrip("/"))
        if folder not in self._rules:
            self._rules[folder] = self._read(posixpath.join(folder, SIDECAR))
        rules = self._rules[folder]
        if isinstance(rules, InvalidHints):
            raise rules
        return sidecar_hints(rules, checkpoint_uri)

    @staticmethod
    def _read(uri: str) -> list[tuple[str, dict]] | InvalidHints:
        if not exists(uri):
            return []
        try:
            return parse_sidecar(read_bytes(uri), uri)
        except InvalidHints as exc:
            return exc


def add_hint_arguments(parser, family_flag: str = "--family") -> None:
    """``--activation``, ``--family`` (or ``family_flag`` where ``--family`` means something else)
    and ``--num-heads`` on a job's argument parser."""
    group = parser.add_argument_group(
        "hints", f"what a state dict cannot say; a checkpoint's metadata, its config.json and a {SIDECAR} "
                 "in its folder take precedence")
    known = ", ".join(sorted(set(ACTIVATION_ALIASES.values())))
    group.add_argument("--activation", help=f"hidden activation ({known})")
    group.add_argument(family_flag, dest="hint_family", choices=FAMILY_HINTS, help="model family")
    group.add_argument("--num-heads", type=int, help="attention heads per layer")


def hints_from_args(args, parser) -> dict:
    """The checked command-line hints of :func:`add_hint_arguments` (a bad one is a usage error)."""
    try:
        return check_hints({"activation": args.activation, "family": args.hint_family,
                            "num_heads": args.num_heads}, "command line")
    except InvalidHints as exc:
        parser.error(exc.reason)
