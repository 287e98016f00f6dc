"""Entry point of the braid operator: ``python operator/main.py`` (or ``braid operator``).

This file is a script, not a package: a package named ``operator`` would shadow the standard
library. The handlers live in ``braid.kube.operator``.
"""

from __future__ import annotations

from braid.kube.entrypoint import run_operator

if __name__ == "__main__":
    run_operator()
