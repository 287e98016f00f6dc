"""Write the generated manifests into the repository.

``python -m braid.tooling.manifests DIR`` writes the CRDs; ``--docs DIR`` writes one
reference page per kind; ``--monitoring DIR`` writes the Prometheus pieces the chart ships
(the Triton PodMonitor's relabelings and a plain ``kubernetes_sd_configs`` scrape job).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from braid.api.v1alpha1 import KINDS
from braid.render.crd_docs import render_kind_reference
from braid.render.crds import render_all_crds
from braid.render.prometheus_config import (
    render_pod_monitor_relabelings,
    render_triton_pod_scrape_job,
)

HEADER = "# Generated from src/braid/api by `make manifests`; do not edit by hand.\n"


def crd_documents() -> dict[str, str]:
    """File name to YAML text of every CRD, exactly as committed under ``crds/``."""
    return {
        name: HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
        for name, crd in render_all_crds().items()
    }


def reference_documents() -> dict[str, str]:
    """File name (``<kind>.md``) to the Markdown reference page of every kind."""
    return {f"{info.kind.lower()}.md": render_kind_reference(info) for info in KINDS}


def monitoring_documents() -> dict[str, str]:
    """The chart's Prometheus files, from the one definition the controller's queries match."""
    return {
        "triton-relabelings.yaml": HEADER
        + yaml.safe_dump(render_pod_monitor_relabelings(), sort_keys=False, width=100),
        "prometheus-scrape-triton.yaml": HEADER
        + "# A scrape job for a Prometheus without the operator: add it to scrape_configs.\n"
        + yaml.safe_dump([render_triton_pod_scrape_job()], sort_keys=False, width=100),
    }


def write_documents(out_dir: Path, documents: dict[str, str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents.items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--docs"]:
        paths = write_documents(
            Path(args[1] if len(args) > 1 else "docs/crds"), reference_documents()
        )
    elif args[:1] == ["--monitoring"]:
        paths = write_documents(
            Path(args[1] if len(args) > 1 else "charts/braid/files/monitoring"),
            monitoring_documents(),
        )
    else:
        paths = write_documents(Path(args[0] if args else "crds"), crd_documents())
    for p in paths:
        sys.stdout.write(f"wrote {p}\n")
