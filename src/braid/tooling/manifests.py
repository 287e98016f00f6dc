"""Write the generated manifests (CRDs) into the repository: ``python -m braid.tooling.manifests``."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from braid.render.crds import render_all_crds

HEADER = "# Generated from src/braid/api by `make manifests`; do not edit by hand.\n"


def crd_documents() -> dict[str, str]:
    """File name to YAML text of every CRD, exactly as committed under ``crds/``."""
    return {
        name: HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
        for name, crd in render_all_crds().items()
    }


def write_crds(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in crd_documents().items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("crds")
    for p in write_crds(target):
        sys.stdout.write(f"wrote {p}\n")
