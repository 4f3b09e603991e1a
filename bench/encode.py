"""Encoder benchmark: embeddings/s on small zoo-shaped models, and time and peak RSS to encode
BERT-shaped checkpoints of about 5M and 22M parameters (cost must grow linearly with parameters).

    python bench/encode.py                      # every graph encoder
    python bench/encode.py --encoders scale_gmn

Each large-model measurement runs in a fresh subprocess (its own peak RSS; best of 2 runs after a
warm-up). Prints a table, then one JSON line; the headline keys are for ``--main`` (scale_gmn).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

from pipeline.zoo.synthetic import BERT_5M, SMALL_CNN, bert_shapes, num_params, write_random

GRAPH_ENCODERS = ["scale_gmn", "neural_graphs", "equivariant_gnn"]


def small_shapes(i: int) -> tuple[dict, dict]:
    """Alternately a Small-CNN-Zoo CNN and a zoo MLP (depth 3, width 64)."""
    if i % 2 == 0:
        return SMALL_CNN, {"activation": "relu"}
    mlp = {"layers.0.weight": (64, 13), "layers.0.bias": (64,), "layers.1.weight": (64, 64), "layers.1.bias": (64,),
           "layers.2.weight": (3, 64), "layers.2.bias": (3,)}
    return mlp, {"activation": "tanh"}


def _graphs(paths):
    from pipeline.checkpoint import open_checkpoint
    from pipeline.graph import build_graph
    return [build_graph(open_checkpoint(p)) for p in paths]


def worker(encoder_name: str, path: str) -> None:
    """Encode one checkpoint; print seconds (best of 2 after a warm-up) and peak RSS."""
    from pipeline.encoders import build_encoder, embed

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    encoder = build_encoder(encoder_name)
    (graph,) = _graphs([path])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        embed(encoder, [graph])
        times.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": min(times[1:]), "peak_rss": peak}))


def encode_in_subprocess(encoder_name: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", encoder_name, path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_throughput(encoder_name: str, graphs) -> float:
    from pipeline.encoders import build_encoder, embed

    torch.manual_seed(0)
    encoder = build_encoder(encoder_name)
    embed(encoder, graphs[:8])
    started = time.perf_counter()
    for start in range(0, len(graphs), 64):
        embed(encoder, graphs[start:start + 64])
    return len(graphs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=GRAPH_ENCODERS)
    parser.add_argument("--main", default="scale_gmn")
    parser.add_argument("--small", type=int, default=512)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    torch.set_num_threads(os.cpu_count())
    work = tempfile.mkdtemp(prefix="bench-encode-")
    big = {}
    for label, shapes in (("5M", bert_shapes(**BERT_5M)), ("22M", bert_shapes())):
        big[label] = (os.path.join(work, f"bert{label}.safetensors"), num_params(shapes))
        write_random(big[label][0], shapes, 0, {"activation": "gelu", "num_attention_heads": "8"})
    paths = []
    for i in range(args.small):
        shapes, meta = small_shapes(i)
        paths.append(os.path.join(work, f"small{i}.safetensors"))
        write_random(paths[-1], shapes, i, meta)
    small = _graphs(paths)

    results = {}
    print(f"\n{'encoder':<18}{'small/s':>10}{'5M s':>8}{'22M s':>8}{'22M RSS GiB':>13}{'time/param ratio':>18}")
    for name in args.encoders:
        r5, r22 = encode_in_subprocess(name, big["5M"][0]), encode_in_subprocess(name, big["22M"][0])
        ratio = (r22["seconds"] / r5["seconds"]) / (big["22M"][1] / big["5M"][1])
        results[name] = {"small_models_per_s": round(small_throughput(name, small), 1),
                         "bert5m_encode_s": round(r5["seconds"], 3), "bert22m_encode_s": round(r22["seconds"], 3),
                         "bert22m_peak_rss_gib": round(r22["peak_rss"] / 2**30, 3),
                         "time_ratio_over_param_ratio": round(ratio, 3)}
        r = results[name]
        print(f"{name:<18}{r['small_models_per_s']:>10}{r['bert5m_encode_s']:>8}{r['bert22m_encode_s']:>8}"
              f"{r['bert22m_peak_rss_gib']:>13}{r['time_ratio_over_param_ratio']:>18}")
    print(f"\nparameters: 5M model {big['5M'][1]:,}, 22M model {big['22M'][1]:,}; small models: "
          f"{args.small} (Small-CNN-Zoo CNNs and 3-layer MLPs)")
    headline = results.get(args.main, next(iter(results.values())))
    print(json.dumps({**headline, "main_encoder": args.main, "encoders": results}))


if __name__ == "__main__":
    main()
