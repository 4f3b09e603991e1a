"""Zoo presets: which (task, family, count) cells to fill, and the sampled hyperparameters of each model.

Everything is derived from ``(preset, seed)``: the same pair always gives the same specs, and each
model's training is seeded by its own ``seed``.
"""
from __future__ import annotations

import json
import zlib

import numpy as np

TABULAR = ["iris", "wine", "breast_cancer", "diabetes", "moons", "circles", "clusters", "friedman",
           "projectile", "oscillator"]

#: preset -> list of (task, family, count) or (task, family, count, variant) cells. ``inr`` models each
#: fit one digits image. A ``variant`` fixes sampled fields (``activation``, ``arch``) and names the
#: cell (``tag``, in its model ids and its sampling seed).
PRESETS: dict[str, list[tuple]] = {
    "tiny": [("iris", "mlp", 6), ("iris", "resnet", 2), ("wine", "mlp", 6), ("moons", "mlp", 6),
             ("moons", "resnet", 2), ("diabetes", "mlp", 6), ("diabetes", "resnet", 2), ("digits", "mlp", 4),
             ("digits", "cnn", 12), ("inr_digits", "inr", 10), ("majority", "transformer", 4)],
    "default": [(t, f, n) for t in TABULAR for f, n in (("mlp", 70), ("resnet", 30))]
               + [("digits", "mlp", 60), ("digits", "resnet", 20), ("digits", "cnn", 1000),
                  ("inr_digits", "inr", 200), ("majority", "transformer", 40)],
    # the canonicalization autoencoder's target architectures, enough of each for held-out
    # reconstruction (issue #14): SIREN 2-32-32-1, the Small-CNN-Zoo CNN per activation, a tabular MLP
    "canon": [("inr_digits", "inr", 1600), ("digits", "cnn", 1600, {"tag": "relu", "activation": "relu"}),
              ("digits", "cnn", 1600, {"tag": "tanh", "activation": "tanh"}),
              ("wine", "mlp", 1600, {"tag": "w32", "activation": "relu", "arch": {"widths": [32, 32]}})],
}
#: the lineage zoo: trees of derived models with their ground truth (:mod:`pipeline.zoo.lineage`)
LINEAGE_PRESET = "lineage"

WIDTHS = [16, 32, 64, 128, 256]
INITS = ["default", "xavier", "orthogonal"]


def _loguniform(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


SEEDS_PER_SETTING = 2


def sample_spec(task: str, family: str, index: int, seed: int, variant: dict | None = None) -> dict:
    """Hyperparameters of one model. Consecutive indices share a hyperparameter setting and differ
    in their training seed (``SEEDS_PER_SETTING`` each), so splits can hold out seeds or whole
    settings; ``hparams_key`` names the setting. ``variant``: see :data:`PRESETS`."""
    variant = variant or {}
    tag = variant.get("tag", "")
    setting, replica = divmod(index, SEEDS_PER_SETTING)
    cell = zlib.crc32(f"{task}/{family}{'/' + tag if tag else ''}".encode())
    rng = np.random.default_rng([seed, setting, cell])
    train_seed = int(np.random.default_rng([seed, setting, cell, replica]).integers(0, 2**31))
    spec = {"task": task, "family": family, "seed": train_seed,
            "lr": round(_loguniform(rng, 3e-4, 1e-2), 6), "weight_decay": float(rng.choice([0.0, 1e-4, 1e-3])),
            "init": str(rng.choice(INITS)), "dropout": float(rng.choice([0.0, 0.0, 0.1])),
            "batch_size": int(rng.choice([32, 64, 128]))}
    if family in ("mlp", "resnet"):
        spec["activation"] = str(rng.choice(["relu", "tanh", "gelu"]))
        spec["epochs"] = int(rng.choice([3, 8, 15, 30]))
        if family == "mlp":
            depth = int(rng.integers(2, 6))
            spec["arch"] = {"widths": [int(rng.choice(WIDTHS))] * (depth - 1)}
        else:
            dim = int(rng.choice(WIDTHS[:4]))
            spec["arch"] = {"dim": dim, "hidden": 2 * dim, "num_blocks": int(rng.integers(1, 4))}
    elif family == "cnn":
        spec["activation"] = str(rng.choice(["relu", "tanh"]))
        spec["epochs"] = int(rng.choice([1, 2, 4, 8, 16, 24]))
        spec["arch"] = {"channels": 16, "num_convs": 3}
    elif family == "inr":
        spec.update(activation="sine", epochs=int(rng.choice([200, 400, 800])), init="siren", dropout=0.0,
                    weight_decay=0.0, lr=round(_loguniform(rng, 5e-4, 2e-3), 6), batch_size=64)
        spec["arch"] = {"widths": [32, 32]}
        spec["image_index"] = int(rng.integers(0, 1797))
    elif family == "transformer":
        dim = int(rng.choice([32, 48, 64]))
        spec.update(activation="gelu", epochs=int(rng.choice([4, 8, 12])), init="default")
        spec["arch"] = {"dim": dim, "heads": int(rng.choice([2, 4])), "ffn": 2 * dim,
                        "num_layers": int(rng.integers(1, 3))}
    else:
        raise KeyError(family)
    spec.update({k: v for k, v in variant.items() if k != "tag"})
    spec["hparams_key"] = json.dumps({k: v for k, v in spec.items() if k not in ("seed", "image_index")},
                                     sort_keys=True)
    spec["model_id"] = f"{task}-{family}-{tag + '-' if tag else ''}{index:05d}"
    return spec


def zoo_specs(preset: str, seed: int = 0) -> list[dict]:
    """All model specs of a preset, in a fixed order."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return [sample_spec(task, family, i, seed, *variant) for task, family, n, *variant in PRESETS[preset]
            for i in range(n)]
