"""Encoder benchmark: embeddings/s on small zoo-shaped models, and time and peak RSS to encode
BERT-shaped checkpoints of about 5M and 22M parameters (cost must grow linearly with parameters);
with ``--real-sizes``, a GPT-2-small-shaped (124M) and a TinyLlama-shaped (1.1B: 22 layers, hidden
2048, FFN 5632, 32 query and 4 key/value heads) Hugging Face folder of bf16 sharded safetensors,
each converted (read, graph, shard written at bf16) and embedded (read back; the ScaleGMN embedding,
then the near-duplicate fingerprints); and the census of the fifteen ``transformers`` architectures
that get computational graphs.

    python bench/encode.py                      # every graph encoder
    python bench/encode.py --encoders scale_gmn
    python bench/encode.py --encoders scale_gmn --real-sizes

Each large-model measurement runs in a fresh subprocess (its own peak RSS; best of 2 runs after a
warm-up; the real sizes once). Prints a table, then one JSON line; the headline keys are for
``--main`` (scale_gmn).
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

from pipeline.zoo.synthetic import (BERT_5M, SMALL_CNN, bert_shapes, gpt2_shapes, llama_shapes, num_params,
                                     write_random, write_random_sharded)

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


def real_worker(folder: str, out: str) -> None:
    """Convert one Hugging Face folder and embed it as ingestion and embed_zoo do; print the seconds
    of each step and the peak RSS."""
    import pyarrow.fs as pafs

    from pipeline.checkpoint import open_checkpoint
    from pipeline.encoders import build_encoder, embed, prepare
    from pipeline.graph import build_graph, read_shard, write_shard
    from pipeline.graph.rows import check_storable
    from pipeline.search.duplicates import fingerprint, output_fingerprint, wiring_fingerprint
    from pipeline.symmetry import canonical_scaling

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    encoder = build_encoder("scale_gmn")
    times = {}
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    graph = build_graph(open_checkpoint(folder))
    check_storable(graph, "bf16")
    write_shard(pafs.LocalFileSystem(), f"{out}/part", [graph], "bf16")
    times["ingest_s"] = time.perf_counter() - started
    mode = graph.mode
    del graph
    started = time.perf_counter()
    graph = next(read_shard(pafs.LocalFileSystem(), f"{out}/part"))
    scaling = canonical_scaling(graph)
    prepared = prepare(graph, scaling=scaling)
    embed(encoder, [prepared])
    times["encode_s"] = time.perf_counter() - started
    started = time.perf_counter()
    fingerprint(graph, scaling), wiring_fingerprint(prepared), output_fingerprint(prepared)
    times["fingerprints_s"] = time.perf_counter() - started
    times["embed_s"] = times["encode_s"] + times["fingerprints_s"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({**times, "peak_rss": peak, "mode": mode}))


def real_sizes(work: str) -> dict:
    """The GPT-2-small-shaped and TinyLlama-shaped rows (see the module docstring)."""
    models = {"gpt2_124m": (gpt2_shapes(), {"model_type": "gpt2", "n_head": 12, "activation_function": "gelu_new"}),
              "llama1b": (llama_shapes(), {"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 4,
                                           "hidden_act": "silu"})}
    rows = {}
    print(f"\n{'checkpoint':<12}{'params':>15}{'graph':>15}{'ingest s':>10}{'encode s':>10}{'prints s':>10}"
          f"{'peak RSS GiB':>14}")
    for name, (shapes, config) in models.items():
        folder = os.path.join(work, name)
        write_random_sharded(folder, shapes, 0, config)
        out = subprocess.run([sys.executable, __file__, "--real-worker", folder, os.path.join(work, f"{name}-out")],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows[name] = {**r, "params": num_params(shapes)}
        print(f"{name:<12}{rows[name]['params']:>15,}{r['mode']:>15}{r['ingest_s']:>10.1f}{r['encode_s']:>10.1f}"
              f"{r['fingerprints_s']:>10.1f}{r['peak_rss'] / 2**30:>14.2f}")
    small, large = rows["gpt2_124m"], rows["llama1b"]
    ratio = ((large["ingest_s"] + large["embed_s"]) / (small["ingest_s"] + small["embed_s"])) \
        / (large["params"] / small["params"])
    return {"llama1b_ingest_s": round(large["ingest_s"], 1), "llama1b_embed_s": round(large["embed_s"], 1),
            "llama1b_peak_rss_gib": round(large["peak_rss"] / 2**30, 2),
            "llama_time_ratio_over_param_ratio": round(ratio, 3),
            "gpt2_124m_ingest_s": round(small["ingest_s"], 1), "gpt2_124m_embed_s": round(small["embed_s"], 1)}


def family_census() -> dict[str, str]:
    """Graph mode of each of fifteen ``transformers`` architectures (tiny random configs, saved with
    ``save_pretrained``)."""
    import transformers as T

    from pipeline.checkpoint import open_checkpoint
    from pipeline.graph import build_graph

    text = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                max_position_embeddings=64)
    decoder = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=64)
    builders = {
        "BertForSequenceClassification": lambda: T.BertForSequenceClassification(T.BertConfig(**text)),
        "ResNetForImageClassification": lambda: T.ResNetForImageClassification(T.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)),
        "GPT2LMHeadModel": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4,
                                                                   n_positions=64, bos_token_id=0, eos_token_id=0)),
        "LlamaForCausalLM": lambda: T.LlamaForCausalLM(T.LlamaConfig(**decoder)),
        "MistralForCausalLM": lambda: T.MistralForCausalLM(T.MistralConfig(**decoder)),
        "Qwen2ForCausalLM": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**decoder)),
        "ViTForImageClassification": lambda: T.ViTForImageClassification(T.ViTConfig(
            image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48)),
        "SwinForImageClassification": lambda: T.SwinForImageClassification(T.SwinConfig(
            image_size=16, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2)),
        "RobertaForSequenceClassification": lambda: T.RobertaForSequenceClassification(T.RobertaConfig(**text)),
        "DistilBertForSequenceClassification": lambda: T.DistilBertForSequenceClassification(T.DistilBertConfig(
            vocab_size=64, dim=32, n_layers=2, n_heads=4, hidden_dim=48)),
        "BertForMaskedLM": lambda: T.BertForMaskedLM(T.BertConfig(**text)),
        "T5ForConditionalGeneration": lambda: T.T5ForConditionalGeneration(T.T5Config(
            vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4)),
        "MobileNetV2ForImageClassification": lambda: T.MobileNetV2ForImageClassification(T.MobileNetV2Config(
            image_size=32, depth_multiplier=0.25)),
        # hidden_dim must match the scaled top convolution (1280 * 0.1), or the model cannot run
        "EfficientNetForImageClassification": lambda: T.EfficientNetForImageClassification(T.EfficientNetConfig(
            image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128)),
        "RegNetForImageClassification": lambda: T.RegNetForImageClassification(T.RegNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4)),
    }
    modes = {}
    with tempfile.TemporaryDirectory() as work:
        for name, make in builders.items():
            folder = os.path.join(work, name)
            make().save_pretrained(folder)
            modes[name] = build_graph(open_checkpoint(folder)).mode
    return modes


def encode_in_subprocess(encoder_name: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", encoder_name, path], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_throughput(encoder_name: str, graphs) -> tuple[float, float]:
    """Small models embedded per second (prepared on the fly, the network run at the probe inputs
    included): in batches of 64, where models of one architecture are stacked into one tensor
    program, and one at a time (the baseline, in the same process)."""
    from pipeline.encoders import build_encoder, embed

    torch.manual_seed(0)
    encoder = build_encoder(encoder_name)
    embed(encoder, graphs[:8])
    started = time.perf_counter()
    for start in range(0, len(graphs), 64):
        embed(encoder, graphs[start:start + 64])
    batched = len(graphs) / (time.perf_counter() - started)
    started = time.perf_counter()
    for graph in graphs:
        embed(encoder, [graph])
    return batched, len(graphs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=GRAPH_ENCODERS)
    parser.add_argument("--main", default="scale_gmn")
    parser.add_argument("--small", type=int, default=512)
    parser.add_argument("--real-sizes", action="store_true", help="also the 124M and 1.1B Hugging Face folders")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--real-worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    if args.real_worker:
        return real_worker(*args.real_worker)

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
    print(f"\n{'encoder':<18}{'small/s':>10}{'alone/s':>9}{'5M s':>8}{'22M s':>8}{'22M RSS GiB':>13}{'time/param ratio':>18}")
    for name in args.encoders:
        r5, r22 = encode_in_subprocess(name, big["5M"][0]), encode_in_subprocess(name, big["22M"][0])
        ratio = (r22["seconds"] / r5["seconds"]) / (big["22M"][1] / big["5M"][1])
        batched, alone = small_throughput(name, small)
        results[name] = {"small_models_per_s": round(batched, 1), "batched_small_models_per_s": round(batched, 1),
                         "one_at_a_time_small_models_per_s": round(alone, 1), "batched_speedup": round(batched / alone, 2),
                         "bert5m_encode_s": round(r5["seconds"], 3), "bert22m_encode_s": round(r22["seconds"], 3),
                         "bert22m_peak_rss_gib": round(r22["peak_rss"] / 2**30, 3),
                         "time_ratio_over_param_ratio": round(ratio, 3)}
        r = results[name]
        print(f"{name:<18}{r['small_models_per_s']:>10}{r['one_at_a_time_small_models_per_s']:>9}{r['bert5m_encode_s']:>8}{r['bert22m_encode_s']:>8}"
              f"{r['bert22m_peak_rss_gib']:>13}{r['time_ratio_over_param_ratio']:>18}")
    print(f"\nparameters: 5M model {big['5M'][1]:,}, 22M model {big['22M'][1]:,}; small models: "
          f"{args.small} (Small-CNN-Zoo CNNs and 3-layer MLPs)")
    headline = results.get(args.main, next(iter(results.values())))
    census = family_census()
    print(f"\ntransformers architectures with computational graphs: "
          f"{sum(m == 'computational' for m in census.values())} of {len(census)}")
    for name, mode in census.items():
        print(f"  {name:<40}{mode}")
    real = real_sizes(work) if args.real_sizes else {}
    print(json.dumps({**headline, **real, "hf_families_computational": sum(m == "computational" for m in census.values()),
                      "main_encoder": args.main, "encoders": results}))


if __name__ == "__main__":
    main()
