"""Names shared by the exporter, the operator and the gateway, defined once."""

from __future__ import annotations


def block_model_name(model: str, index: int) -> str:
    """Triton model name of block ``index`` of ``model`` (e.g. ``fmnist-cnn.b3``)."""
    return f"{model}.b{index}"


def link_model_name(link: str) -> str:
    """Triton model name of a Link: the Link's own object name."""
    return link


def exit_head_model_name(model: str, index: int) -> str:
    """Triton model name of the early-exit head after block ``index`` of ``model``."""
    return f"{model}.exit.{index}"
