"""The figures of CoDE's evaluation, redrawn for braid's models (matplotlib, Agg, PNG).

- ``paths-accuracy-vs-local-params.png``: every path's accuracy against its local
  parameters and against its local compute cut, with the balanced and heavy choices marked
  and the accuracy/compute trade-off front drawn (CoDE Fig. 4-5 in one view).
- ``skip-accuracy-heatmap.png``: skip-connection accuracy over (lout, lin), normal and
  reduced links side by side (CoDE Fig. 5a).
- ``link-size-normal-vs-reduced.png``: accuracy and link parameters per connection at both
  link sizes (CoDE Fig. 5b and Fig. 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from braid.api.catalog import PathCatalog

_COLOURS = {
    "original": "black",
    "skip": "tab:blue",
    "cross": "tab:orange",
    "exit": "tab:green",
    "skip+exit": "tab:purple",
}


def plot_all(catalog: PathCatalog, results: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _paths(catalog, results, out_dir / "paths-accuracy-vs-local-params.png"),
        _heatmap(catalog, out_dir / "skip-accuracy-heatmap.png"),
        _sizes(results, out_dir / "link-size-normal-vs-reduced.png"),
    ]


def _paths(catalog: PathCatalog, results: dict[str, Any], path: Path) -> Path:
    original = catalog.path(catalog.original_path).metrics
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for kind, colour in _COLOURS.items():
        entries = [p for p in catalog.paths if p.kind == kind]
        if not entries:
            continue
        params = [p.metrics.params_local / 1e3 for p in entries]
        cut = [100 * (1 - p.metrics.compute_us_local / original.compute_us_local) for p in entries]
        acc = [100 * p.metrics.accuracy for p in entries]
        axes[0].scatter(params, acc, s=22, c=colour, label=kind, alpha=0.8)
        axes[1].scatter(cut, acc, s=22, c=colour, label=kind, alpha=0.8)
    markers = {"balanced": ("*", "red"), "heavy": ("X", "magenta")}
    for name, (marker, colour) in markers.items():
        if name not in results:
            continue
        row = results[name]
        entry = catalog.path(row["path"])
        axes[0].scatter(
            entry.metrics.params_local / 1e3,
            100 * entry.metrics.accuracy,
            s=260,
            marker=marker,
            facecolors="none",
            edgecolors=colour,
            linewidths=2,
            label=f"chosen ({name}): {row['path']}",
        )
        axes[1].scatter(
            row["local_compute_cut_pct"],
            100 * entry.metrics.accuracy,
            s=260,
            marker=marker,
            facecolors="none",
            edgecolors=colour,
            linewidths=2,
        )
    front = results.get("pareto_front", [])
    if front:
        axes[1].plot(
            [f["local_compute_cut_pct"] for f in front],
            [100 * f["accuracy"] for f in front],
            "k--",
            lw=1,
            label="trade-off front",
        )
    base = 100 * catalog.baseline_accuracy
    for ax in axes:
        ax.axhline(base, color="grey", lw=0.8)
        ax.axhline(base - 2, color="grey", lw=0.8, ls=":")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0.0, base - 30), min(100.0, base + 3))
        ax.grid(alpha=0.3)
    axes[1].axvline(75, color="grey", lw=0.8, ls=":")
    axes[0].set_xlabel("local parameters (thousands)")
    axes[1].set_xlabel("local compute time cut vs original (%)")
    axes[0].set_title(f"{catalog.local_model}: every path (baseline {base:.1f}%, dotted: -2 pt)")
    axes[1].set_title("accuracy vs local compute cut")
    axes[0].legend(fontsize=7, loc="lower right")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heatmap(catalog: PathCatalog, path: Path) -> Path:
    skips = [p for p in catalog.paths if p.kind == "skip"]
    sizes = sorted({p.link_size or "" for p in skips}, key=lambda s: (s != "normal", s))
    n = len(catalog.path(catalog.original_path).hops)
    fig, axes = plt.subplots(1, max(1, len(sizes)), figsize=(5.5 * max(1, len(sizes)), 4.6))
    axes_list = list(axes) if len(sizes) > 1 else [axes]
    for ax, size in zip(axes_list, sizes, strict=False):
        grid = [[float("nan")] * n for _ in range(n)]
        for p in skips:
            if p.link_size == size and p.lout is not None and p.lin is not None:
                grid[p.lout][p.lin] = 100 * p.metrics.accuracy
        im = ax.imshow(grid, cmap="viridis", origin="upper")
        for i in range(n):
            for j in range(n):
                if grid[i][j] == grid[i][j]:  # not NaN
                    ax.text(
                        j, i, f"{grid[i][j]:.1f}", ha="center", va="center", fontsize=7, color="w"
                    )
        ax.set_xlabel("lin (first local block after the link)")
        ax.set_ylabel("lout (last local block before the link)")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_title(f"skip-connection accuracy (%), {size} links")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sizes(results: dict[str, Any], path: Path) -> Path:
    rows = [r for r in results.get("link_size_study", []) if len(r) > 3]
    sizes = sorted(
        {k for r in rows for k in r if k.startswith(("normal", "reduced"))},
        key=lambda s: (s != "normal", s),
    )
    labels = [r["connection"].split("/", 1)[1] for r in rows]
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.42 * len(rows) + 2), 7.5), sharex=True)
    width = 0.8 / max(1, len(sizes))
    for i, size in enumerate(sizes):
        xs = [j + i * width for j in range(len(rows))]
        acc = [100 * r[size]["accuracy"] if size in r else 0.0 for r in rows]
        params = [r[size]["link_params"] / 1e3 if size in r else 0.0 for r in rows]
        axes[0].bar(xs, acc, width=width, label=size)
        axes[1].bar(xs, params, width=width, label=f"{size} link")
    skipped = [r.get("skipped_params", 0) / 1e3 for r in rows]
    axes[1].plot(
        [j + 0.4 - width / 2 for j in range(len(rows))], skipped, "k.", label="skipped block params"
    )
    axes[0].set_ylabel("test accuracy (%)")
    lo = min([100 * r[s]["accuracy"] for r in rows for s in sizes if s in r] or [0.0])
    axes[0].set_ylim(max(0.0, lo - 5), 100)
    axes[1].set_ylabel("parameters (thousands)")
    axes[1].set_yscale("log")
    axes[1].set_xticks([j + 0.4 - width / 2 for j in range(len(rows))])
    axes[1].set_xticklabels(labels, rotation=70, fontsize=7)
    axes[0].set_title("links at normal vs reduced size (skip and cross connections)")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
