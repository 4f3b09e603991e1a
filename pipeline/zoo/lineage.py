"""The ``lineage`` zoo: trees of models derived from one another, every derivation recorded, the
ground truth for lineage recovery (:mod:`pipeline.lineage`).

Each tree grows from a base model trained from scratch (a zoo spec of :mod:`.presets`, or a tiny
``transformers`` LLaMA or BERT of :data:`HF_BASES`, saved as a Hugging Face folder), four levels
deep (:func:`grow_tree`):

* level 1: two full fine-tunes and one partial fine-tune or LoRA fine-tune of the base;
* level 2: the two fine-tunes merged (their weight average), and one or two children of each level-1
  model; level 3: one child of each level-2 model that was trained (not cast or pruned);
* two *symmetry copies* of leaves in their parent's basis: the leaf under a random group element of
  :mod:`pipeline.symmetry` (a re-upload with permuted, rescaled or sign-flipped neurons), and
  ``TRANSFORMED_SHARE`` of the other derivations also re-based by a random element after the
  derivation (``transformed``).

Derivations (:data:`pipeline.lineage.EDGE_TYPES`): ``finetune`` (every weight, on a
:func:`skewed_half` of the training data: half of the classes, or one side of a hyperplane, as
downstream data differs from pre-training data), ``partial_finetune`` (the first half of the layers frozen), ``lora`` (a rank-2
or -4 update ``B A`` of every weight matrix, biases frozen; merged into the weights, and the adapter
also written in PEFT's layout under ``adapters/``), ``cast`` (to fp16 or bf16, or an int8 round trip
per tensor), ``merge`` (two siblings averaged), ``prune`` (the smallest 30-50% of each weight matrix
zeroed) and ``symmetry``.

Catalog columns beyond the zoo's: ``parents`` (model ids; two for a merge, none for a base),
``edge_type``, ``edge_detail`` (the cast's dtype, the LoRA rank, the pruned share), ``transformed``,
``tree`` (its base's id), ``depth`` and ``adapter`` (the PEFT folder of a LoRA fine-tune, named
``<model id>-adapter``: a model of its own, whose parent is the fine-tune's).
"""
from __future__ import annotations

import json
import time

import numpy as np
import torch
from torch.func import functional_call

from pipeline.checkpoint import open_checkpoint, save_checkpoint
from pipeline.checkpoint.dtypes import BF16, round_to
from pipeline.graph import build_graph
from pipeline.storage import join, write_file
from pipeline.symmetry import apply, random_element
from pipeline.zoo.presets import sample_spec
from pipeline.zoo.train import evaluate_model, rebuild_model, spec_data, train_model

#: (task, family, variant) of the trees' bases, two trees each: every family the zoo trains whose
#: derivations the lineage tests read (ReLU and tanh, dense, residual, convolutional, attention)
LINEAGE_BASES = [("wine", "mlp", {"tag": "relu", "activation": "relu", "arch": {"widths": [32, 32]}}),
                 ("iris", "mlp", {"tag": "tanh", "activation": "tanh", "arch": {"widths": [32, 32]}}),
                 ("diabetes", "resnet", {"tag": "relu", "activation": "relu",
                                         "arch": {"dim": 32, "hidden": 64, "num_blocks": 2}}),
                 ("digits", "cnn", {"tag": "relu", "activation": "relu", "epochs": 4}),
                 ("digits", "cnn", {"tag": "tanh", "activation": "tanh", "epochs": 4}),
                 ("majority", "transformer", {"tag": "t", "arch": {"dim": 32, "heads": 2, "ffn": 64, "num_layers": 1},
                                              "epochs": 4})]
#: ``transformers`` bases, tiny configs trained on the majority task (tokens of a vocabulary of 16,
#: length 12): family -> (model class, config class, config, activation). The causal LM is read at
#: its last position, over the first two tokens of its vocabulary, as the two classes.
HF_BASES = {
    "hf-llama": ("LlamaForCausalLM", "LlamaConfig", dict(
        vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16), "silu"),
    "hf-bert": ("BertForSequenceClassification", "BertConfig", dict(
        vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=2), "gelu"),
}
LINEAGE_BASES += [("majority", family, {"tag": family[3:]}) for family in HF_BASES]
TREES_PER_BASE = 2
#: share of derivations re-based by a random group element after the derivation
TRANSFORMED_SHARE = 0.25
TRAIN_STEPS = (100, 200, 300)
#: fine-tuning learning rates, log10-uniform: 2e-4 to 1e-3, below the bases' (3e-4 to 1e-2)
FINETUNE_LOG_LR = (-3.7, -3.0)
BATCH = 64


def hf_model(arch: dict) -> torch.nn.Module:
    """A ``transformers`` model of ``arch`` (``class``, ``config_class``, ``config``) whose
    ``forward(tokens)`` returns the two classes' logits (its state dict keeps ``transformers``' names)."""
    import transformers as T

    T.utils.logging.disable_progress_bar()
    cls = getattr(T, arch["class"])

    def forward(self, tokens):
        logits = cls.forward(self, input_ids=tokens).logits
        return logits[:, -1, :2] if logits.ndim == 3 else logits

    return type(f"{cls.__name__}Classes", (cls,), {"forward": forward})(getattr(T, arch["config_class"])(**arch["config"]))


def rebuild(row: dict, tensors: dict) -> tuple[torch.nn.Module, object]:
    """:func:`pipeline.zoo.train.rebuild_model`, for ``transformers`` bases too."""
    if row["family"] not in HF_BASES:
        return rebuild_model(row, tensors)
    model = hf_model(json.loads(row["arch"]))
    model.load_state_dict({n: torch.from_numpy(np.array(t, dtype=np.float32)) for n, t in tensors.items()}, strict=False)
    return model.eval(), spec_data({"task": row["task"], "family": "transformer"})


def train_hf_base(out_dir: str, task: str, family: str, variant: dict, index: int, seed: int) -> dict:
    """Train a :data:`HF_BASES` model from scratch and save it as a Hugging Face folder; its catalog row."""
    started = time.perf_counter()
    class_name, config_class, config, activation = HF_BASES[family]
    model_id = f"{task}-{family}-lineage-{variant['tag']}-{index:05d}"
    train_seed = int(np.random.default_rng([seed, index, 11]).integers(2**31))
    torch.manual_seed(train_seed)
    arch = {"class": class_name, "config_class": config_class, "config": config}
    model, data = hf_model(arch), spec_data({"task": task, "family": "transformer"})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    epochs, batch = 8, 64
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data.x_train))
        for start in range(0, len(order), batch):
            pick = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            data.loss(model(data.x_train[pick]), data.y_train[pick]).backward()
            optimizer.step()
    train_metric, test_metric = evaluate_model(model, data)
    row = {"model_id": model_id, "task": task, "dataset": data.dataset, "family": family, "activation": activation,
           "label": -1, "image_index": -1, "seed": train_seed, "lr": 3e-3, "weight_decay": 0.01, "init": "default",
           "dropout": 0.0, "epochs": epochs, "batch_size": batch, "arch": json.dumps(arch, sort_keys=True),
           "hparams_key": json.dumps(arch, sort_keys=True), "metric_name": data.metric_name,
           "train_metric": train_metric, "test_metric": test_metric,
           "num_params": sum(p.numel() for p in model.parameters()), "train_seconds": time.perf_counter() - started}
    row["path"] = save_model(out_dir, row, model_id, _state(model))
    return row


def save_model(out_dir: str, base: dict, model_id: str, tensors: dict) -> str:
    """Write a model of ``base``'s family: a safetensors file with the metadata the graph builders
    read, or for ``transformers`` bases a Hugging Face folder (``config.json``, ``model.safetensors``);
    its path relative to ``out_dir``."""
    if base["family"] in HF_BASES:
        folder = join("models", model_id)
        write_file(join(out_dir, folder, "config.json"), hf_model(json.loads(base["arch"])).config.to_json_string())
        save_checkpoint(tensors, join(out_dir, folder, "model.safetensors"))
        return folder
    heads = {"num_attention_heads": str(json.loads(base["arch"])["heads"])} if base["family"] == "transformer" else {}
    path = join("models", f"{model_id}.safetensors")
    save_checkpoint(tensors, join(out_dir, path), {"model_id": model_id, "family": base["family"],
                                                   "activation": base["activation"], **heads})
    return path


def _weight_matrices(model: torch.nn.Module) -> list[str]:
    """Names of the parameters LoRA, pruning and int8 act on: weights of linear and conv layers."""
    return [f"{name}.weight" for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]


def skewed_half(data, rng: np.random.Generator) -> torch.Tensor:
    """Indices of a fine-tuning set drawn from the training data as a downstream data set differs
    from pre-training data: the samples of a random half of the classes (of the label at the last
    position, for sequences), or for regression those on one side of a random hyperplane through
    the inputs' median."""
    y = data.y_train if data.y_train.ndim == 1 else data.y_train.reshape(len(data.y_train), -1)[:, -1]
    if data.kind in ("classification", "sequence"):
        classes = np.unique(y.numpy())
        chosen = rng.choice(classes, max(2, len(classes) // 2), replace=False)
        keep = np.isin(y.numpy(), chosen)
    else:
        x = data.x_train.reshape(len(data.x_train), -1).double().numpy()
        side = x @ rng.standard_normal(x.shape[1])
        keep = side > np.median(side)
    return torch.from_numpy(np.flatnonzero(keep))


def _train(model, data, rng: np.random.Generator, names: list[str] | None = None, extra: dict | None = None,
           merged=None) -> None:
    """A few hundred Adam steps on a :func:`skewed_half` of the training data: of the parameters
    ``names`` (default: all), or only of ``extra`` tensors, the model run as ``merged(params, extra)``."""
    torch.manual_seed(int(rng.integers(2**31)))
    half = skewed_half(data, rng)
    params = dict(model.named_parameters())
    trained = list(extra.values()) if extra else [params[n] for n in (names or params)]
    optimizer = torch.optim.Adam(trained, lr=float(10 ** rng.uniform(*FINETUNE_LOG_LR)))
    model.train()
    for _ in range(int(rng.choice(TRAIN_STEPS))):
        pick = half[torch.randint(0, len(half), (BATCH,))]
        optimizer.zero_grad(set_to_none=True)
        out = functional_call(model, merged(params, extra), (data.x_train[pick],)) if extra else model(data.x_train[pick])
        data.loss(out, data.y_train[pick]).backward()
        optimizer.step()
    model.eval()


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: t.detach().numpy().copy() for n, t in model.state_dict().items()}


def finetune(row, tensors, rng) -> tuple[dict, str]:
    model, data = rebuild(row, tensors)
    _train(model, data, rng)
    return _state(model), ""


def partial_finetune(row, tensors, rng) -> tuple[dict, str]:
    """The first half of the weight matrices' layers frozen (their weights and biases)."""
    model, data = rebuild(row, tensors)
    layers = [n.rsplit(".", 1)[0] for n in _weight_matrices(model)]
    frozen = tuple(f"{layer}." for layer in layers[:len(layers) // 2])
    _train(model, data, rng, [n for n, _ in model.named_parameters() if not n.startswith(frozen)])
    return _state(model), f"frozen={len(frozen)}"


def lora(row, tensors, rng) -> tuple[dict, str, dict]:
    """A LoRA fine-tune: ``W + (alpha / r) B A`` for every weight matrix (``A [r, fan_in]``, ``B
    [out, r]`` zero at the start, as PEFT initializes them), the base frozen. Returns the merged
    weights, the detail, and the adapter's tensors in PEFT's names."""
    model, data = rebuild(row, tensors)
    rank, alpha = int(rng.choice([2, 4])), 8.0
    targets = _weight_matrices(model)
    params = dict(model.named_parameters())
    factors = {}
    for name in targets:
        w = params[name]
        fan_in = w[0].numel()
        factors[f"{name}:A"] = torch.nn.Parameter(torch.randn(rank, fan_in) / fan_in ** 0.5)
        factors[f"{name}:B"] = torch.nn.Parameter(torch.zeros(len(w), rank))

    def merged(base, extra):
        return {**base, **{n: base[n] + (alpha / rank) * (extra[f"{n}:B"] @ extra[f"{n}:A"]).reshape(base[n].shape)
                           for n in targets}}

    _train(model, data, rng, extra=factors, merged=merged)
    with torch.no_grad():
        out = {n: t.numpy().copy() for n, t in merged(dict(model.named_parameters()), factors).items()}
    state = {**_state(model), **out}
    adapter = {}
    for name in targets:  # PEFT's layout: lora_A [r, in] (a conv's [r, in, k, k]), lora_B [out, r] ([out, r, 1, 1])
        module, shape = name.rsplit(".", 1)[0], params[name].shape
        a, b = factors[f"{name}:A"].detach(), factors[f"{name}:B"].detach()
        adapter[f"base_model.model.{module}.lora_A.weight"] = a.reshape(rank, *shape[1:]).numpy()
        adapter[f"base_model.model.{module}.lora_B.weight"] = b.reshape(len(b), rank, *[1] * (len(shape) - 2)).numpy()
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "bias": "none",
              "target_modules": sorted({n.rsplit(".", 1)[0] for n in targets})}
    return state, f"rank={rank}", {"tensors": adapter, "config": config}


def cast(row, tensors, rng) -> tuple[dict, str]:
    """fp16, bf16 (every tensor stored so) or an int8 round trip of each weight matrix (absmax per
    tensor, :func:`pipeline.checkpoint.dtypes.round_to`, back to float32)."""
    kind = str(rng.choice(["fp16", "bf16", "int8"]))
    if kind == "fp16":
        return {n: t.astype(np.float16) for n, t in tensors.items()}, kind
    if kind == "bf16":
        return {n: t.astype(BF16) for n, t in tensors.items()}, kind
    return {n: round_to("int8", t) if t.ndim >= 2 else t for n, t in tensors.items()}, kind


def prune(row, tensors, rng) -> tuple[dict, str]:
    """Magnitude pruning: the smallest ``share`` of every weight matrix zeroed."""
    share = float(rng.choice([0.3, 0.5]))
    out = dict(tensors)
    for name, t in tensors.items():
        if t.ndim >= 2:
            out[name] = np.where(np.abs(t) <= np.quantile(np.abs(t), share), 0.0, t).astype(t.dtype)
    return out, f"share={share}"


DERIVATIONS = {"finetune": finetune, "partial_finetune": partial_finetune, "lora": lora, "cast": cast, "prune": prune}
#: derivations whose children are trained further (casts and pruned copies are release artefacts: leaves)
TRAINED = ("finetune", "partial_finetune", "lora", "merge")


class _Tree:
    """One tree being grown into ``out_dir``: its rows, the tensors of each node, its random stream."""

    def __init__(self, out_dir: str, base: dict, rng: np.random.Generator):
        self.out_dir, self.rng, self.base = out_dir, rng, base
        self.rows = [{**base, "parents": [], "edge_type": "", "edge_detail": "", "transformed": False,
                      "tree": base["model_id"], "depth": 0, "adapter": ""}]
        checkpoint = open_checkpoint(join(out_dir, base["path"]))
        self.tensors = {base["model_id"]: {n: np.array(t) for n, t in checkpoint.tensors.items()}}
        self.graph = build_graph(checkpoint)  # every member's architecture

    def _float32(self, tensors: dict) -> dict:
        return {n: np.asarray(t, dtype=np.float32) for n, t in tensors.items()}

    def _transform(self, tensors: dict) -> dict:
        """``tensors`` under a random group element of the tree's architecture."""
        graph = self.graph.with_tensors(tensors)
        return {n: np.asarray(t) for n, t in apply(graph, random_element(graph, self.rng)).items()}

    def derive(self, parents: list[dict], kind: str, transformed: bool | None = None) -> dict:
        """A child of ``parents`` by derivation ``kind``, saved with its catalog row."""
        parent = parents[0]
        index = sum(r["depth"] > 0 for r in self.rows)
        model_id = f"{self.base['model_id']}-{index:02d}-{kind}"
        transformed = kind != "symmetry" and self.rng.random() < TRANSFORMED_SHARE if transformed is None else transformed
        source = self._float32(self.tensors[parent["model_id"]])
        adapter, detail = None, ""
        if kind == "merge":
            other = self._float32(self.tensors[parents[1]["model_id"]])
            tensors = {n: (source[n] + other[n]) / 2 for n in source}
        elif kind == "symmetry":
            tensors = self._transform(self.tensors[parent["model_id"]])
        else:
            first = kind == "cast" and transformed  # re-based, then cast: the copy keeps the cast's grid
            if first:
                source = self._transform(source)
            tensors, detail, *rest = DERIVATIONS[kind](parent, source, self.rng)
            adapter = rest[0] if rest else None
            if transformed and not first:
                tensors = self._transform(tensors)
        model, data = rebuild(parent, self._float32(tensors))
        train_metric, test_metric = evaluate_model(model, data)
        path = save_model(self.out_dir, self.base, model_id, tensors)
        row = {**parent, "model_id": model_id, "path": path, "train_metric": train_metric, "test_metric": test_metric,
               "parents": [p["model_id"] for p in parents], "edge_type": kind, "edge_detail": detail,
               "transformed": bool(transformed), "depth": max(p["depth"] for p in parents) + 1, "adapter": ""}
        if adapter is not None:
            folder = join("adapters", f"{model_id}-adapter")
            write_file(join(self.out_dir, folder, "adapter_config.json"), json.dumps(
                {**adapter["config"], "base_model_name_or_path": f"../../{parent['path']}"}, indent=1))
            save_checkpoint(adapter["tensors"], join(self.out_dir, folder, "adapter_model.safetensors"))
            row["adapter"] = folder
        self.rows.append(row)
        self.tensors[model_id] = tensors
        return row


def grow_tree(out_dir: str, task: str, family: str, variant: dict, index: int, seed: int = 0) -> list[dict]:
    """Train a base model and grow its tree (see the module docstring); returns the catalog rows."""
    torch.set_num_threads(1)
    rng = np.random.default_rng([seed, index, 7])
    if family in HF_BASES:
        base = train_hf_base(out_dir, task, family, variant, index, seed)
    else:
        base = train_model(sample_spec(task, family, index, seed, {**variant, "tag": f"lineage-{variant['tag']}"}), out_dir)
    tree = _Tree(out_dir, base, rng)
    base = tree.rows[0]
    # the two fine-tunes stay in the base's basis: their merge is of one basis, as merges are made
    level1 = [tree.derive([base], "finetune", transformed=False), tree.derive([base], "finetune", transformed=False),
              tree.derive([base], str(rng.choice(["partial_finetune", "lora"])))]
    level2 = [tree.derive(level1[:2], "merge", transformed=False)]
    for node in level1:
        for _ in range(int(rng.integers(1, 3))):
            level2.append(tree.derive([node], str(rng.choice(["finetune", "lora", "partial_finetune", "cast", "prune"]))))
    for node in level2:
        if node["edge_type"] in TRAINED:
            tree.derive([node], str(rng.choice(["finetune", "lora", "cast", "prune"])))
    children = {p for r in tree.rows for p in r["parents"]}
    # leaves in their parent's basis: a copy of a re-based leaf would be a re-based derivation of
    # the same parent as the leaf, so which of the two is the original could not be told
    leaves = [r for r in tree.rows if r["model_id"] not in children and r["depth"] > 0 and not r["transformed"]]
    for i in rng.choice(len(leaves), min(2, len(leaves)), replace=False):
        tree.derive([leaves[int(i)]], "symmetry")
    return tree.rows


def lineage_catalog_rows(out_dir: str, seed: int = 0, bases: list[tuple] = LINEAGE_BASES,
                         trees: int = TREES_PER_BASE) -> list[dict]:
    """``trees`` trees of each of ``bases``, one Ray task each; the catalog rows, sorted by model id."""
    import ray

    grow = ray.remote(num_cpus=1)(grow_tree)
    jobs = [grow.remote(out_dir, task, family, variant, i * len(bases) + j, seed)
            for j, (task, family, variant) in enumerate(bases) for i in range(trees)]
    return sorted((r for rows in ray.get(jobs) for r in rows), key=lambda r: r["model_id"])

