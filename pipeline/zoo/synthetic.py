"""Randomly initialized checkpoints of known shapes, for benchmarks and scale tests."""
from __future__ import annotations

import os

import numpy as np

from pipeline.checkpoint import save_checkpoint

#: Small CNN Zoo (Unterthiner et al. 2020): 3 conv layers of 16 channels, GAP, dense head; 4,970 parameters.
SMALL_CNN = {"convs.0.weight": (16, 1, 3, 3), "convs.0.bias": (16,), "convs.1.weight": (16, 16, 3, 3),
             "convs.1.bias": (16,), "convs.2.weight": (16, 16, 3, 3), "convs.2.bias": (16,),
             "head.weight": (10, 16), "head.bias": (10,)}


def bert_shapes(vocab: int = 30522, hidden: int = 384, layers: int = 6, ffn: int = 1536,
                positions: int = 512) -> dict[str, tuple]:
    """Hugging Face BERT parameter shapes (defaults: MiniLM-L6-H384, about 22.7M parameters)."""
    shapes = {"embeddings.word_embeddings.weight": (vocab, hidden),
              "embeddings.position_embeddings.weight": (positions, hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden),
              "embeddings.LayerNorm.weight": (hidden,), "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = (hidden, hidden), (hidden,)
        shapes[f"{p}intermediate.dense.weight"], shapes[f"{p}intermediate.dense.bias"] = (ffn, hidden), (ffn,)
        shapes[f"{p}output.dense.weight"], shapes[f"{p}output.dense.bias"] = (hidden, ffn), (hidden,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{ln}.weight"], shapes[f"{p}{ln}.bias"] = (hidden,), (hidden,)
    shapes["pooler.dense.weight"], shapes["pooler.dense.bias"] = (hidden, hidden), (hidden,)
    return shapes


#: BERT shapes of about 5.2M parameters (same family, for scaling measurements).
BERT_5M = {"vocab": 8000, "hidden": 256, "layers": 4, "ffn": 1024, "positions": 512}


def num_params(shapes: dict[str, tuple]) -> int:
    return sum(int(np.prod(s)) for s in shapes.values())


def write_random(path: str, shapes: dict[str, tuple], seed: int, metadata: dict[str, str]) -> None:
    """A checkpoint of ``shapes`` with N(0, 0.05^2) float32 weights."""
    rng = np.random.default_rng(seed)
    save_checkpoint({n: rng.standard_normal(s, dtype=np.float32) * 0.05 for n, s in shapes.items()}, path, metadata)


def small_cnn_folder(work: str, count: int) -> tuple[str, list[str]]:
    """``<work>/small-<count>/``: ``count`` random Small-CNN-Zoo checkpoints (ReLU), kept between
    runs; returns the folder and the files."""
    folder = os.path.join(work, f"small-{count}")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"cnn-{i:05d}.safetensors") for i in range(count)]
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            write_random(path, SMALL_CNN, i, {"activation": "relu"})
    return folder, paths


def gpt2_shapes(vocab: int = 50257, hidden: int = 768, layers: int = 12, positions: int = 1024) -> dict[str, tuple]:
    """Hugging Face GPT-2 parameter shapes (defaults: GPT-2 small, about 124M parameters; ``Conv1D``
    weights ``[in, out]``, the fused ``c_attn``)."""
    shapes = {"wte.weight": (vocab, hidden), "wpe.weight": (positions, hidden)}
    for i in range(layers):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            shapes[f"{p}{ln}.weight"], shapes[f"{p}{ln}.bias"] = (hidden,), (hidden,)
        for name, fan_in, fan_out in (("attn.c_attn", hidden, 3 * hidden), ("attn.c_proj", hidden, hidden),
                                      ("mlp.c_fc", hidden, 4 * hidden), ("mlp.c_proj", 4 * hidden, hidden)):
            shapes[f"{p}{name}.weight"], shapes[f"{p}{name}.bias"] = (fan_in, fan_out), (fan_out,)
    shapes["ln_f.weight"], shapes["ln_f.bias"] = (hidden,), (hidden,)
    return shapes


def llama_shapes(vocab: int = 32000, hidden: int = 2048, layers: int = 22, ffn: int = 5632, heads: int = 32,
                 kv_heads: int = 4) -> dict[str, tuple]:
    """Hugging Face LLaMA parameter shapes (defaults: TinyLlama-1.1B, grouped-query attention)."""
    head_dim = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes[f"{p}self_attn.q_proj.weight"] = (hidden, hidden)
        shapes[f"{p}self_attn.k_proj.weight"] = shapes[f"{p}self_attn.v_proj.weight"] = (kv_heads * head_dim, hidden)
        shapes[f"{p}self_attn.o_proj.weight"] = (hidden, hidden)
        shapes[f"{p}mlp.gate_proj.weight"] = shapes[f"{p}mlp.up_proj.weight"] = (ffn, hidden)
        shapes[f"{p}mlp.down_proj.weight"] = (hidden, ffn)
        shapes[f"{p}input_layernorm.weight"] = shapes[f"{p}post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"], shapes["lm_head.weight"] = (hidden,), (vocab, hidden)
    return shapes


def write_random_sharded(folder: str, shapes: dict[str, tuple], seed: int, config: dict,
                         shard_bytes: int = 512 * 2**20) -> None:
    """A Hugging Face folder of bf16 random weights: ``config.json`` and safetensors shards of about
    ``shard_bytes`` with ``model.safetensors.index.json``; one shard in memory at a time."""
    import json
    import os

    from pipeline.checkpoint.dtypes import BF16

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        current[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(BF16)
        size += current[name].nbytes
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    shards += [current] if current else []
    weight_map = {}
    for k, tensors in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_checkpoint(tensors, os.path.join(folder, file), {"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(int(np.prod(s)) * 2 for s in shapes.values())},
                   "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
