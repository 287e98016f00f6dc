"""Write a Block's serving settings into an exported ``config.pbtxt``, through Triton's own
model-config schema (the ``ModelConfig`` protobuf tritonclient ships): the exported file
keeps the model's signature and backend, the Block decides batching and instance groups,
and a config Triton would refuse is refused here first, with its reason."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from braid.api.repository_plan import ServingSettings
from braid.artifacts.fetch import FetchError

_KINDS = {
    "KIND_CPU": model_config_pb2.ModelInstanceGroup.KIND_CPU,
    "KIND_GPU": model_config_pb2.ModelInstanceGroup.KIND_GPU,
}


def parse_model_config(text: str, where: str) -> model_config_pb2.ModelConfig:
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise FetchError("InvalidModelConfig", f"{where}: {exc}") from None


def apply_serving(text: str, serving: ServingSettings, where: str) -> str:
    """``text`` with the Block's batching and instances; the signature is left as exported."""
    config = parse_model_config(text, where)
    too_big = [b for b in serving.preferred_batch_sizes if b > serving.max_batch_size]
    if too_big:
        raise FetchError(
            "InvalidModelConfig",
            f"{where}: preferred batch sizes {too_big} exceed maxBatchSize {serving.max_batch_size}",
        )
    config.max_batch_size = serving.max_batch_size
    config.ClearField("dynamic_batching")
    if serving.dynamic_batching and serving.max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_microseconds
        config.dynamic_batching.preferred_batch_size.extend(serving.preferred_batch_sizes)
    del config.instance_group[:]
    group = config.instance_group.add()
    group.count = serving.instance_count
    group.kind = _KINDS[serving.instance_kind]
    group.gpus.extend(serving.gpus)
    return str(text_format.MessageToString(config))
