"""Randomly initialized checkpoints of known shapes, for benchmarks and scale tests."""
from __future__ import annotations

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
