"""Cut any torch model into blocks at named points of its graph (torch.fx).

``split_model`` in ``braid.tooling.split`` cuts a flat ``nn.Sequential``. A ResNet or a
transformer is not a sequence of modules: a residual block reads its input twice, so the
only places it can be cut are those where exactly one tensor flows from what runs before to
what runs after. This module traces the model into a graph and finds those places:

- The *layers* of a traced model are its graph's computing nodes in execution order
  (``graph_layers``). A ``Partition`` (the ``Model`` resource's block list) indexes them,
  as it indexes the children of an ``nn.Sequential``; ``braid models layers`` prints them.
- A cut point is named by a graph node (``layer1_0_relu_1``) or by a module path
  (``layer1``, ``layer1.0``: the cut goes after the last node inside that module), and
  ``partition_from_cuts`` turns names into the Partition's layer ranges.
- A cut where more than one tensor crosses (inside a residual block, between the two
  branches of an attention layer and its skip) is refused, naming the tensors, before
  anything is trained.

Nodes that do not depend on the model input (``get_attr`` constants and what is computed
from them only) are copied into every block that reads them instead of counting as tensors
that cross.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from braid.api.v1alpha1.model import Partition, PartitionBlock
from braid.tooling.split import Block, PartitionError, Shape, count_macs, count_params, evaluating


class _LeafTracer(fx.Tracer):
    """The standard tracer, plus modules named by glob patterns kept whole (not traced into).

    Keeping a submodule whole is how a model with Python the tracer cannot follow (a Hugging
    Face attention layer with its shape checks) is split between such submodules.
    """

    def __init__(self, leaf_patterns: Sequence[str]) -> None:
        super().__init__()
        self.leaf_patterns = tuple(leaf_patterns)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if any(fnmatch.fnmatchcase(module_qualified_name, p) for p in self.leaf_patterns):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace_model(model: nn.Module, leaf_modules: Sequence[str] = ()) -> fx.GraphModule:
    """``model`` as a ``GraphModule`` sharing its parameters (an fx graph passes through)."""
    if isinstance(model, fx.GraphModule) and not leaf_modules:
        return model
    try:
        tracer = _LeafTracer(leaf_modules)
        graph = tracer.trace(model)
    except Exception as exc:  # torch.fx raises many kinds; each means "cannot trace"
        raise PartitionError(
            f"torch.fx cannot trace {type(model).__name__}: {_first_line(exc)}. Keep the "
            "submodule it fails in whole with leafModules (glob patterns of module names), "
            "or give a torch.export program instead"
        ) from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, class_name=name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class GraphLayer:
    """One computing node of the traced graph: the unit a partition's layer index counts."""

    index: int
    name: str
    """The fx node's name (unique in the graph)."""
    module_path: str
    """The module that runs it (``layer1.0`` for a residual add); empty for the model's own code."""
    op: str


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    return str(next(reversed(stack.values()))[0])


def _input_dependent(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes whose value depends on the model input (the rest are constants of the graph)."""
    dependent: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _computing_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    dependent = _input_dependent(gm)
    return [
        n
        for n in gm.graph.nodes
        if n in dependent
        and n.op not in ("placeholder", "output")
        # torch.export's input-shape check: it computes nothing a block passes on, and
        # the blocks are checked on their own sample inputs.
        and not (n.op == "call_module" and n.target == "_guards_fn")
    ]


def graph_layers(gm: fx.GraphModule) -> list[GraphLayer]:
    """The layers a partition of this graph counts, in execution order."""
    return [
        GraphLayer(i, n.name, _module_path(n), n.op) for i, n in enumerate(_computing_nodes(gm))
    ]


def resolve_cut(layers: Sequence[GraphLayer], name: str) -> int:
    """The layer index after which a cut named ``name`` goes.

    A node name wins; otherwise ``name`` is a module path and the cut goes after the last
    node inside it. An unknown name fails with the closest names the graph has.
    """
    for layer in layers:
        if layer.name == name:
            return layer.index
    inside = [
        layer.index
        for layer in layers
        if layer.module_path == name or layer.module_path.startswith(name + ".")
    ]
    if inside:
        return inside[-1]
    known = sorted({x.name for x in layers} | {p for x in layers for p in _prefixes(x.module_path)})
    close = difflib.get_close_matches(name, known, n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise PartitionError(
        f"no layer or module named {name!r} in the model's graph{hint} "
        "(braid models layers -f <spec> lists them)"
    )


def _prefixes(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def partition_from_cuts(
    layers: Sequence[GraphLayer], cuts: Sequence[tuple[str, str | None]]
) -> Partition:
    """A Partition from ``(block name, last layer or module name)``; the last may be ``None``
    (the block runs to the end of the model)."""
    if not cuts:
        raise PartitionError("the partition has no blocks")
    blocks: list[PartitionBlock] = []
    first = 0
    for i, (block, end) in enumerate(cuts):
        if end is None:
            if i != len(cuts) - 1:
                raise PartitionError(f"block {block}: only the last block may omit its end")
            last = len(layers) - 1
        else:
            try:
                last = resolve_cut(layers, end)
            except PartitionError as exc:
                raise PartitionError(f"block {block}: {exc}") from None
        if last < first:
            raise PartitionError(
                f"block {block}: ends at {end!r} (layer {last}), which runs before the block's "
                f"first layer {first} ({layers[first].name}); blocks must be in execution order"
            )
        blocks.append(PartitionBlock(name=block, first_layer=first, last_layer=last))
        first = last + 1
    return Partition(blocks=blocks)


def _crossing(
    nodes: Sequence[fx.Node], upto: int, placeholder: fx.Node, output: fx.Node
) -> list[fx.Node]:
    """Input-dependent values made at or before ``nodes[upto]`` that something after reads."""
    after = {*nodes[upto + 1 :], output}
    return [n for n in [placeholder, *nodes[: upto + 1]] if any(u in after for u in n.users)]


def _copy_with_constants(
    graph: fx.Graph, node: fx.Node, env: dict[fx.Node, fx.Node], dependent: set[fx.Node]
) -> fx.Node:
    """Copy ``node`` into ``graph``, first copying any constant node it reads."""
    for arg in node.all_input_nodes:
        if arg not in env:
            if arg in dependent:
                raise PartitionError(f"{node.name} reads {arg.name}, which no earlier node made")
            _copy_with_constants(graph, arg, env, dependent)
    env[node] = graph.node_copy(node, lambda n: env[n])
    return env[node]


def split_graph(
    model: nn.Module,
    partition: Partition,
    input_shape: Sequence[int],
    model_name: str,
    *,
    leaf_modules: Sequence[str] = (),
    input_dtype: torch.dtype = torch.float32,
) -> list[Block]:
    """The blocks of ``model`` as ``partition`` cuts its traced graph, each checked on a
    sample input. Blocks share the model's parameters, so the chain computes what it does."""
    gm = trace_model(model, leaf_modules)
    set_training(gm, model.training)
    nodes = _computing_nodes(gm)
    dependent = _input_dependent(gm)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if len(placeholders) != 1:
        names = ", ".join(p.name for p in placeholders)
        raise PartitionError(
            f"{model_name}: the model takes {len(placeholders)} inputs ({names}); a block "
            "runtime passes one tensor, so wrap the model to take one"
        )
    final = output.args[0]
    if isinstance(final, tuple | list) and len(final) == 1:
        final = final[0]  # a torch.export graph returns its outputs flattened into a tuple
    if not isinstance(final, fx.Node):
        raise PartitionError(
            f"{model_name}: the model returns {type(final).__name__}, not one tensor"
        )
    problems = partition.problems()
    if problems:
        raise PartitionError(f"{model_name}: {problems[0]}")
    n_layers = len(nodes)
    last = partition.blocks[-1]
    if partition.blocks[0].first_layer != 0 or last.last_layer != n_layers - 1:
        raise PartitionError(
            f"{model_name}: the blocks must cover layers 0..{n_layers - 1} of the graph; they "
            f"cover {partition.blocks[0].first_layer}..{last.last_layer}"
        )
    blocks: list[Block] = []
    incoming = placeholders[0]
    shape: Shape = tuple(int(d) for d in input_shape)
    dtype = input_dtype
    for index, spec in enumerate(partition.blocks):
        where = (
            f"{model_name}: block {spec.name} (B{index}, layers {spec.first_layer}..{spec.last_layer}, "
            f"{nodes[spec.first_layer].name}..{nodes[spec.last_layer].name})"
        )
        crossing = _crossing(nodes, spec.last_layer, placeholders[0], output)
        if len(crossing) != 1:
            names = ", ".join(n.name for n in crossing)
            raise PartitionError(
                f"{where}: {len(crossing)} tensors cross the cut after "
                f"{nodes[spec.last_layer].name} ({names}); a block passes one tensor on. The "
                f"cut is inside a residual block or a branch: move it to where the branches join"
            )
        result = crossing[0]
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {incoming: graph.placeholder("x")}
        for node in nodes[spec.first_layer : spec.last_layer + 1]:
            _copy_with_constants(graph, node, env, dependent)
        if result not in env:
            raise PartitionError(f"{where}: its output {result.name} is made by an earlier block")
        graph.output(env[result])
        module = fx.GraphModule(gm, graph, class_name=f"Block_{spec.name.replace('-', '_')}")
        set_training(module, model.training)
        sample = _sample(shape, dtype)
        try:
            with evaluating(module):
                out = module(sample)
        except Exception as exc:  # a block's own code can raise anything
            raise PartitionError(
                f"{where}: fails on an input of shape {shape}: {_first_line(exc)}"
            ) from exc
        if not isinstance(out, torch.Tensor):
            raise PartitionError(f"{where}: returns {type(out).__name__}, not one tensor")
        out_shape: Shape = tuple(int(d) for d in out.shape[1:])
        blocks.append(
            Block(
                model=model_name,
                index=index,
                name=spec.name,
                first_layer=spec.first_layer,
                last_layer=spec.last_layer,
                module=module,
                input_shape=shape,
                output_shape=out_shape,
                params=count_params(module),
                macs=count_macs(module, shape, dtype),
                input_dtype=dtype,
            )
        )
        incoming, shape, dtype = result, out_shape, out.dtype
    return blocks


def set_training(module: nn.Module, mode: bool) -> None:
    """Each submodule's mode flag set directly: a ``torch.export`` module refuses ``train()``
    (its graph has the mode baked in), and the flag is all the other modules read."""
    for m in module.modules():
        m.training = mode


def _sample(shape: Shape, dtype: torch.dtype) -> torch.Tensor:
    """Two samples of zeros: batch 2, so a layer that mixes the batch dimension shows up."""
    return torch.zeros((2, *shape), dtype=dtype)
