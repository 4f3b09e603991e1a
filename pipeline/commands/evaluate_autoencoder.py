"""Evaluate trained canonicalization autoencoders side by side: reconstruction of held-out models,
orbit collapse, interpolation barriers, merging k models in canonical space, and canonicalization
against re-basin throughput. Writes report.md, metrics.json and PNGs.

    weightzoo evaluate-autoencoder --graphs data/canon-graphs --catalog data/canon/catalog.parquet \\
        --autoencoders runs/autoencoders/ae-inr_sine-scale_gmn.pt runs/autoencoders/ae-inr_sine-neural_graphs.pt \\
                       runs/autoencoders/ae-cnn_relu-scale_gmn.pt runs/autoencoders/ae-cnn_tanh-scale_gmn.pt \\
        --out runs/ae-report

Held-out models are the test split (by seed; never trained on). Equivalent INR pairs are a model and
a random element of its group with 1e-3 relative noise; CNN pairs are distinct same-task models
above their target's median accuracy.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from pipeline.autoencoder.evaluate import (interpolation, latent_vectors, merged_accuracy, orbit_spread, rates,
                                           reconstruction)
from pipeline.autoencoder.trainer import load_autoencoder, of_target
from pipeline.evaluation.report import save_figure
from pipeline.graph.rows import records_to_graphs
from pipeline.rebasin.interpolate import plot_paths
from pipeline.ray_utils import ensure_ray
from pipeline.storage import join, write_file
from pipeline.symmetry import random_element, transformed
from pipeline.training.dataset import labelled_models, labelled_table, split


def _held_out(graphs_dir: str, models, target, limit: int, which: str):
    table = labelled_table(graphs_dir, split(of_target(models, target), which).slice(0, limit))
    rows = table.select([c for c in table.column_names if c.startswith("label_")]).to_pylist()
    return list(records_to_graphs(table)), [{k.removeprefix("label_"): v for k, v in r.items()} for r in rows]


def _latent_map(latents: dict[str, tuple[np.ndarray, np.ndarray]], png: str) -> None:
    """Per autoencoder, a 2-D PCA map of held-out latents with one orbit marked (the seed's Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(latents), figsize=(4.5 * len(latents), 4), squeeze=False)
    for ax, (name, (held_out, orbit)) in zip(axes[0], latents.items()):
        mean = held_out.mean(0)
        _, _, vt = np.linalg.svd(held_out - mean, full_matrices=False)
        ax.scatter(*((held_out - mean) @ vt[:2].T).T, s=6, c="0.7", label="held-out models")
        ax.scatter(*((orbit - mean) @ vt[:2].T).T, s=14, c="C3", marker="x", label="one model's orbit")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, png, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graphs", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--autoencoders", required=True, nargs="+", help="exported autoencoders (.pt)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--held-out", type=int, default=300, help="models per target (at most)")
    parser.add_argument("--split", default="test", choices=["test", "val", "train"],
                        help="the models evaluated (train: only to see the jobs run on a tiny zoo)")
    parser.add_argument("--orbit", type=int, default=100, help="group elements per orbit")
    parser.add_argument("--pairs", type=int, default=20, help="interpolation pairs per target")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ensure_ray()
    rng = np.random.default_rng(args.seed)
    models = labelled_models(args.graphs, args.catalog)
    loaded = [load_autoencoder(path) for path in args.autoencoders]
    metrics, report, by_target = {}, ["# Canonicalization autoencoders", ""], {}
    for (model, config), path in zip(loaded, args.autoencoders):
        by_target.setdefault(model.target.name, []).append((f"{config.encoder} AE", model))
    for target_name, aes in by_target.items():
        target = aes[0][1].target
        graphs, rows = _held_out(args.graphs, models, target, args.held_out, args.split)
        if len(graphs) < 2:
            report.append(f"## {target_name}: fewer than 2 held-out models, skipped")
            continue
        report += [f"## {target_name} ({target.num_params} parameters, {len(graphs)} held-out models)", "",
                   "| autoencoder | reconstruction | orbit max rel. diff |", "|---|---|---|"]
        latents = {}
        for name, model in aes:
            figures = reconstruction(model, graphs, rows)
            if target.family == "inr":  # and on models it trained on: the seed's train MSE
                trained = _held_out(args.graphs, models, target, args.held_out, "train")
                figures["train_pixel_mse"] = reconstruction(model, *trained)["pixel_mse"]
            spread, orbit = orbit_spread(model, graphs[0], args.orbit, rng)
            latents[name] = (latent_vectors(model, graphs), orbit)
            key = f"{target_name} {name}"
            metrics[key] = {**figures, "orbit_max_rel_diff": spread}
            report.append(f"| {name} | {json.dumps({k: round(v, 5) for k, v in figures.items()})} | {spread:.2e} |")
        _latent_map(latents, join(args.out, f"latents-{target_name}.png"))
        report += ["", f"![latents](latents-{target_name}.png)", ""]

        pairs = []
        if target.family == "inr":  # functionally equivalent pairs: a model and a noisy group element of it
            for g, r in zip(graphs[:args.pairs], rows):
                moved = transformed(g, random_element(g, rng))
                noisy = {k: (v + 1e-3 * np.std(v) * rng.standard_normal(v.shape)).astype(v.dtype)
                         for k, v in moved.tensors.items()}
                pairs.append((g, moved.with_tensors(noisy), r))
        else:  # distinct well-trained models of the task
            good = [i for i, r in enumerate(rows) if r["test_metric"] >= np.median([x["test_metric"] for x in rows])]
            pairs = [(graphs[good[i]], graphs[good[i + 1]], rows[good[i]]) for i in range(0, min(len(good) - 1,
                                                                                             2 * args.pairs), 2)]
        barriers: dict[str, list[float]] = {}
        midpoint_ok = []
        for k, (a, b, row) in enumerate(pairs):
            paths = interpolation(dict(aes), a, b, row)
            for name, p in paths.items():
                barriers.setdefault(name, []).append(p.barrier)
            ae = paths[aes[0][0]]
            midpoint_ok.append(ae.metric[len(ae.metric) // 2] >= min(ae.metric[0], ae.metric[-1]) - 1e-9)
            if k == 0:
                plot_paths(paths, join(args.out, f"paths-{target_name}.png"), f"{target_name}: first pair")
        means = {name: float(np.mean(v)) for name, v in barriers.items()}
        metrics[f"{target_name} barriers"] = {**means, "pairs": len(pairs),
                                              "ae_midpoint_not_below_worse_endpoint": float(np.mean(midpoint_ok))}
        report += ["| path | mean barrier |", "|---|---|"] + [f"| {n} | {v:.4g} |" for n, v in means.items()]
        report += ["", f"![paths](paths-{target_name}.png)", ""]

        if target.family != "inr":
            main_ae = aes[0][1]
            for k in (2, 4, 8):
                if len(graphs) >= k:
                    metrics[f"{target_name} merge{k}"] = merged_accuracy(main_ae, graphs[:k], rows[:k])
            metrics[f"{target_name} rates"] = rates(main_ae, graphs[:32])
            report += ["| merge | " + " | ".join(f"k={k}" for k in (2, 4, 8)) + " |", "|---|---|---|---|"]
            for method in ("ae", "rebasin", "parents"):
                cells = [f"{metrics[f'{target_name} merge{k}'][method]:.3f}" if f"{target_name} merge{k}" in metrics
                         else "-" for k in (2, 4, 8)]
                report.append(f"| {method} | " + " | ".join(cells) + " |")
            report += ["", f"rates: {json.dumps(metrics[f'{target_name} rates'])}", ""]
    summary = _summary(metrics)
    write_file(join(args.out, "metrics.json"), json.dumps({**summary, "detail": metrics}, indent=2))
    write_file(join(args.out, "report.md"), "\n".join(report + ["", "```", json.dumps(summary, indent=1), "```", ""]))
    print(json.dumps(summary))
    return {**summary, "detail": metrics}


def _summary(metrics: dict) -> dict:
    """The issue's metric keys, from whichever targets were evaluated (``None`` where not)."""
    def get(key, field):
        return metrics.get(key, {}).get(field)

    inr = "inr_sine scale_gmn AE"
    out = {"inr_train_mse": get(inr, "train_pixel_mse"), "inr_test_mse": get(inr, "pixel_mse"),
           "inr_test_mse_32": get(inr, "pixel_mse_32"), "inr_floor_mse_32": get(inr, "floor_mse_32"),
           "inr_test_mse_neural_graphs": get("inr_sine neural_graphs AE", "pixel_mse"),
           "orbit_max_rel_diff": max((m["orbit_max_rel_diff"] for k, m in metrics.items()
                                      if k.endswith("scale_gmn AE")), default=None),
           "inr_equiv_barrier_ae": get("inr_sine barriers", "scale_gmn AE"),
           "inr_equiv_barrier_rebasin": get("inr_sine barriers", "rebasin")}
    for act in ("relu", "tanh"):
        out[f"cnn_{act}_l1_error"] = get(f"cnn_{act} scale_gmn AE", "l1_error")
        out[f"cnn_{act}_kendall_tau"] = get(f"cnn_{act} scale_gmn AE", "kendall_tau")
    cnn = [metrics.get(f"cnn_{a} barriers", {}) for a in ("relu", "tanh")]
    out["cnn_mean_barrier_ae"] = float(np.mean([c["scale_gmn AE"] for c in cnn if c])) if any(cnn) else None
    out["cnn_mean_barrier_rebasin"] = float(np.mean([c["rebasin"] for c in cnn if c])) if any(cnn) else None
    merges = [metrics[k] for k in ("cnn_relu merge8", "cnn_tanh merge8") if k in metrics]
    out["merge8_acc_ae"] = float(np.mean([m["ae"] for m in merges])) if merges else None
    out["merge8_acc_rebasin"] = float(np.mean([m["rebasin"] for m in merges])) if merges else None
    rate = [metrics[k] for k in ("cnn_relu rates", "cnn_tanh rates") if k in metrics]
    out["canonicalize_per_s"] = float(np.mean([r["canonicalize_per_s"] for r in rate])) if rate else None
    out["rebasin_align_per_s"] = float(np.mean([r["rebasin_align_per_s"] for r in rate])) if rate else None
    return out


if __name__ == "__main__":
    main()
