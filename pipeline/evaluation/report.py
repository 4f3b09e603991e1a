"""Writing the evaluation report: ``metrics.json``, ``report.md`` and PNG figures (embedding maps,
precision-recall curves, a bar chart of the headline metrics)."""
from __future__ import annotations

import io
import json

import numpy as np

from pipeline.evaluation.metrics import RECALL_LEVELS
from pipeline.storage import join, write_file

#: Columns of the report's tables: (metrics.json key, header, format).
RETRIEVAL = [("p_at_1", "P@1"), ("p_at_5", "P@5"), ("p_at_10", "P@10"), ("r_at_1", "R@1"), ("r_at_5", "R@5"),
             ("r_at_10", "R@10"), ("f1_at_1", "F1@1"), ("f1_at_5", "F1@5"), ("f1_at_10", "F1@10"), ("map", "mAP")]
ROBUSTNESS = [("sym_mean_cos", "sym mean cos"), ("sym_min_cos", "sym min cos"), ("sym_mean_dist", "sym mean dist"),
              ("sym_max_dist", "sym max dist"), ("silhouette", "silhouette"), ("davies_bouldin", "Davies-Bouldin"),
              ("kendall_tau", "Kendall tau (CNN)")]
TRANSFER = [("transfer_gain_10", "gain, 10 ex."), ("transfer_gain_50", "gain, 50 ex."),
            ("transfer_gain_100", "gain, 100 ex.")]
BARS = ["p_at_1", "map", "silhouette", "kendall_tau", "transfer_gain_50"]


def _table(results: dict[str, dict], columns: list[tuple[str, str]], digits: int = 3) -> str:
    head = "| encoder | " + " | ".join(h for _, h in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = [f"| {name} | " + " | ".join(_fmt(m.get(k), digits) for k, _ in columns) + " |"
            for name, m in results.items()]
    return "\n".join([head, rule, *rows])


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def save_figure(fig, uri: str, dpi: int = 110) -> None:
    """Write a matplotlib figure as a PNG (path or URI) and close it."""
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_file(uri, buffer.getvalue())


def write_report(out: str, results: dict[str, dict], embeddings: dict[str, np.ndarray], labels: np.ndarray,
                 curves: dict[str, np.ndarray], context: dict) -> None:
    """``results``: encoder name -> metrics; ``embeddings``: name -> test embeddings ``[n, d]``;
    ``labels [n]`` task labels; ``curves``: name -> interpolated precision at ``RECALL_LEVELS``;
    ``context``: what was evaluated (printed at the top of the report). ``out``: a folder path or URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    write_file(join(out, "metrics.json"), json.dumps(results, indent=2))

    names = list(results)
    tasks = sorted(set(labels))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(tasks), 2)))
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4.5 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        z = embeddings[name]
        xy = TSNE(2, perplexity=min(30, len(z) - 1), init="pca", random_state=0).fit_transform(z)
        for t, c in zip(tasks, colours):
            mask = labels == t
            ax.scatter(xy[mask, 0], xy[mask, 1], s=8, color=c, label=t.split("|")[0])
        ax.set_title(name)
        ax.set_xticks([]), ax.set_yticks([])
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, markerscale=1.5, loc="best")
    fig.suptitle("test-split embeddings (t-SNE), coloured by task")
    fig.tight_layout()
    save_figure(fig, join(out, "embedding_map.png"))

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name in names:
        ax.plot(RECALL_LEVELS, curves[name], marker="o", ms=3, label=name)
    ax.set_xlabel("recall"), ax.set_ylabel("interpolated precision"), ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall (relevant = same task)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, join(out, "precision_recall.png"))

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        values = [results[name].get(m, np.nan) for m in BARS]
        ax.bar(np.arange(len(BARS)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(BARS)) + 0.4 - width / 2, BARS)
    ax.axhline(0, color="black", lw=0.5)
    ax.legend(fontsize=8)
    ax.set_title("headline metrics")
    fig.tight_layout()
    save_figure(fig, join(out, "metrics.png"))

    lines = ["# Evaluation report", ""]
    lines += [f"- {k}: {v}" for k, v in context.items()]
    lines += ["", "## Retrieval (relevant = same task and data set)", "", _table(results, RETRIEVAL), "",
              "## Symmetry robustness, clustering, accuracy prediction", "", _table(results, ROBUSTNESS, 4), "",
              "## Transfer (accuracy gain over training from scratch)", "", _table(results, TRANSFER), "",
              "![embedding map](embedding_map.png)", "", "![precision-recall](precision_recall.png)", "",
              "![metrics](metrics.png)", ""]
    write_file(join(out, "report.md"), "\n".join(lines))
