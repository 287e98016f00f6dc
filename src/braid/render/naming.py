"""Names shared by the exporter, the operator and the gateway, defined once."""

from __future__ import annotations


def block_model_name(model: str, block: str) -> str:
    """Triton model name of the partition block named ``block`` of ``model`` (``fmnist-cnn.b3``).

    The exporter, the operator (which loads a Block's models into its Triton) and the
    gateway must agree on it, so it is derived from the Model's partition, never guessed.
    """
    return f"{model}.{block}"


def link_model_name(link: str) -> str:
    """Triton model name of a Link: the Link's own object name."""
    return link


def exit_head_model_name(model: str, index: int) -> str:
    """Triton model name of the early-exit head after block ``index`` of ``model``."""
    return f"{model}.exit.{index}"
