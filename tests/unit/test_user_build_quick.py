"""``braid models build -f spec --quick`` caps a spec's sizes and keeps what is already small."""

from __future__ import annotations

from braid.tooling.build_spec import BuildSpec
from braid.tooling.user_build import QUICK_LIMITS, quick_spec


def _spec(**train: object) -> BuildSpec:
    return BuildSpec.model_validate(
        {
            "name": "m",
            "model": {"function": "m:f", "inputShape": [1, 28, 28]},
            "dataset": {"loader": "m:load", "testSamples": 500},
            "partition": {"blocks": [{"name": "b0"}]},
            "train": train,
        }
    )


def test_quick_caps_training_and_evaluation_sizes() -> None:
    quick = quick_spec(_spec(epochs=5, linkSamples=20000, linkEpochs=3))
    assert quick.train.epochs == 1
    assert quick.train.samples == QUICK_LIMITS["samples"]
    assert quick.train.link_samples == QUICK_LIMITS["link_samples"]
    assert quick.train.link_epochs == QUICK_LIMITS["link_epochs"]
    assert quick.dataset.validation_samples == QUICK_LIMITS["validation_samples"]


def test_quick_keeps_smaller_settings_and_a_pretrained_model_untrained() -> None:
    quick = quick_spec(_spec(epochs=0, samples=100, linkSamples=50, linkEpochs=1))
    assert quick.train.epochs == 0
    assert (quick.train.samples, quick.train.link_samples, quick.train.link_epochs) == (100, 50, 1)
    assert quick.dataset.test_samples == 500
