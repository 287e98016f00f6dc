"""Which paths exist: names of the Triton models and ids of the paths, and the path grid.

Names are part of braid's interface: path ids go into ``OffloadPolicy.spec.candidatePaths``
and the controller's status, Triton model names into the operator's Deployments and the
gateway's hop calls. They are built here, in one place, from the path's parameters only, so
they stay the same across rebuilds.

- blocks: ``<model>.<block>`` (``fmnist-cnn.b3``)
- skip links: ``<local>.skip.<lout>-<lin>.<size>`` (served by the local provider)
- cross links: ``<host>.xin.<local>.<lout>-<hin>-<hout>-<lin>.<size>`` and ``...xout...``
  (served by the host provider: CoDE puts every cross link on the host)
- exit heads: ``<local>.exit.<k>``
- path ids: ``<local>/original``, ``<local>/skip/<lout>-<lin>/<size>``,
  ``<local>/cross/<lout>-<host>:<hin>-<hout>-<lin>/<size>``, ``<local>/exit/<k>``,
  ``<local>/skip/<lout>-<lin>/<size>+exit/<k>``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from braid.render.naming import block_model_name
from braid.tooling.split import Block, Shape

Server = Literal["local", "host"]


def block_model(block: Block) -> str:
    return block_model_name(block.model, block.name)


def skip_link_name(local: str, lout: int, lin: int, size: str) -> str:
    return f"{local}.skip.{lout}-{lin}.{size}"


def cross_link_names(
    local: str, host: str, lout: int, hin: int, hout: int, lin: int, size: str
) -> tuple[str, str]:
    tag = f"{local}.{lout}-{hin}-{hout}-{lin}.{size}"
    return f"{host}.xin.{tag}", f"{host}.xout.{tag}"


def exit_head_name(local: str, k: int) -> str:
    return f"{local}.exit.{k}"


@dataclass(frozen=True)
class LinkPlan:
    """A learnable module of some path: a skip link, a cross link pair member, or an exit head."""

    name: str
    kind: Literal["skip", "cross-entry", "cross-exit", "exit"]
    server: Server
    provider: str
    in_shape: Shape
    out_shape: Shape
    size: str


@dataclass(frozen=True)
class HopRef:
    name: str
    role: Literal["block", "link", "exit"]
    server: Server
    provider: str


@dataclass(frozen=True)
class PathPlan:
    """An executable path: its id, its parameters, and its hops in order."""

    id: str
    kind: Literal["original", "skip", "cross", "exit", "skip+exit"]
    hops: tuple[HopRef, ...]
    lout: int | None = None
    lin: int | None = None
    host_model: str | None = None
    hin: int | None = None
    hout: int | None = None
    exit_after: int | None = None
    link_size: str | None = None
    links: tuple[LinkPlan, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Grid:
    """Which paths to build. ``None`` picks the default grid described on each field."""

    sizes: tuple[str, ...] = ("normal", "reduced4")
    skip_pairs: tuple[tuple[int, int], ...] | None = None
    """Every valid (lout, lin) with lin > lout + 1."""
    cross: tuple[tuple[int, int, int, int], ...] | None = None
    """(lout, hin, hout, lin): lout in {0, 1}, hin = lout + 1 (the host block whose input has
    the same spatial size), every hout among the host's conv blocks, lin among the last three
    local blocks. The host's fully connected blocks are left out: their 256-vector of digit
    features carries little that a Fashion-MNIST classifier can use, and the one that fits
    costs 295 k host parameters."""
    exits: tuple[int, ...] | None = None
    """Exit heads after every block but the last two (an exit after the penultimate block
    would be the model's own classifier)."""
    combos: tuple[tuple[int, int, int], ...] | None = None
    """(lout, lin, k): a normal skip link then the exit head after block k (k >= lin), by
    default for every valid skip pair with k = lin where an exit head exists."""


def _local_blocks_hops(blocks: Sequence[Block], indices: Sequence[int]) -> list[HopRef]:
    return [HopRef(block_model(blocks[i]), "block", "local", blocks[i].model) for i in indices]


def valid_skip(n_blocks: int, lout: int, lin: int) -> bool:
    return lout >= 0 and lin < n_blocks and lin > lout + 1


def default_skip_pairs(n_blocks: int) -> list[tuple[int, int]]:
    return [(lout, lin) for lout in range(n_blocks) for lin in range(lout + 2, n_blocks)]


def default_cross(local: Sequence[Block], host: Sequence[Block]) -> list[tuple[int, int, int, int]]:
    n = len(local)
    out: list[tuple[int, int, int, int]] = []
    for lout in (0, 1):
        hin = lout + 1
        if hin >= len(host) - 1:
            continue
        for hout in range(hin, len(host) - 1):
            if len(host[hout].output_shape) != 3:
                break
            for lin in range(max(lout + 2, n - 3), n):
                out.append((lout, hin, hout, lin))
    return out


def plan_paths(local: Sequence[Block], host: Sequence[Block], grid: Grid) -> list[PathPlan]:
    """Every path of the grid, the original first, in a stable order."""
    if not local:
        raise ValueError("the local model has no blocks")
    lname = local[0].model
    hname = host[0].model if host else ""
    n = len(local)
    plans = [
        PathPlan(
            id=f"{lname}/original", kind="original", hops=tuple(_local_blocks_hops(local, range(n)))
        )
    ]
    skip_pairs = list(grid.skip_pairs) if grid.skip_pairs is not None else default_skip_pairs(n)
    for lout, lin in skip_pairs:
        if not valid_skip(n, lout, lin):
            raise ValueError(
                f"skip ({lout}, {lin}) is not valid for {n} blocks (need lin > lout+1)"
            )
        for size in grid.sizes:
            link = LinkPlan(
                skip_link_name(lname, lout, lin, size),
                "skip",
                "local",
                lname,
                local[lout].output_shape,
                local[lin].input_shape,
                size,
            )
            hops = [
                *_local_blocks_hops(local, range(lout + 1)),
                HopRef(link.name, "link", "local", lname),
                *_local_blocks_hops(local, range(lin, n)),
            ]
            plans.append(
                PathPlan(
                    id=f"{lname}/skip/{lout}-{lin}/{size}",
                    kind="skip",
                    hops=tuple(hops),
                    lout=lout,
                    lin=lin,
                    link_size=size,
                    links=(link,),
                )
            )
    cross = (
        list(grid.cross) if grid.cross is not None else (default_cross(local, host) if host else [])
    )
    for lout, hin, hout, lin in cross:
        if not (0 <= lout < lin < n and 0 <= hin <= hout < len(host)):
            raise ValueError(f"cross ({lout}, {hin}, {hout}, {lin}) is out of range")
        for size in grid.sizes:
            xin, xout = cross_link_names(lname, hname, lout, hin, hout, lin, size)
            entry = LinkPlan(
                xin,
                "cross-entry",
                "host",
                hname,
                local[lout].output_shape,
                host[hin].input_shape,
                size,
            )
            exit_ = LinkPlan(
                xout,
                "cross-exit",
                "host",
                hname,
                host[hout].output_shape,
                local[lin].input_shape,
                size,
            )
            hops = [
                *_local_blocks_hops(local, range(lout + 1)),
                HopRef(xin, "link", "host", hname),
                *[
                    HopRef(block_model(host[i]), "block", "host", hname)
                    for i in range(hin, hout + 1)
                ],
                HopRef(xout, "link", "host", hname),
                *_local_blocks_hops(local, range(lin, n)),
            ]
            plans.append(
                PathPlan(
                    id=f"{lname}/cross/{lout}-{hname}:{hin}-{hout}-{lin}/{size}",
                    kind="cross",
                    hops=tuple(hops),
                    lout=lout,
                    lin=lin,
                    host_model=hname,
                    hin=hin,
                    hout=hout,
                    link_size=size,
                    links=(entry, exit_),
                )
            )
    exits = list(grid.exits) if grid.exits is not None else list(range(max(0, n - 2)))
    heads: dict[int, LinkPlan] = {}
    for k in exits:
        if not 0 <= k < n - 1:
            raise ValueError(f"exit after block {k} is out of range for {n} blocks")
        heads[k] = LinkPlan(
            exit_head_name(lname, k),
            "exit",
            "local",
            lname,
            local[k].output_shape,
            local[-1].output_shape,
            "normal",
        )
        hops = [
            *_local_blocks_hops(local, range(k + 1)),
            HopRef(heads[k].name, "exit", "local", lname),
        ]
        plans.append(
            PathPlan(
                id=f"{lname}/exit/{k}",
                kind="exit",
                hops=tuple(hops),
                exit_after=k,
                links=(heads[k],),
            )
        )
    combos = (
        list(grid.combos)
        if grid.combos is not None
        else [(lo, li, li) for lo, li in skip_pairs if li in heads]
    )
    size = grid.sizes[0]
    for lout, lin, k in combos:
        if k not in heads or not lin <= k or not valid_skip(n, lout, lin):
            raise ValueError(
                f"combination skip ({lout}, {lin}) + exit {k} needs a valid skip and head"
            )
        link_name = skip_link_name(lname, lout, lin, size)
        skip = next((p for p in plans if p.links and p.links[0].name == link_name), None)
        if skip is None:
            raise ValueError(f"combination needs the skip path {lout}-{lin}/{size} in the grid")
        hops = [
            *_local_blocks_hops(local, range(lout + 1)),
            HopRef(link_name, "link", "local", lname),
            *_local_blocks_hops(local, range(lin, k + 1)),
            HopRef(heads[k].name, "exit", "local", lname),
        ]
        plans.append(
            PathPlan(
                id=f"{lname}/skip/{lout}-{lin}/{size}+exit/{k}",
                kind="skip+exit",
                hops=tuple(hops),
                lout=lout,
                lin=lin,
                exit_after=k,
                link_size=size,
                links=(skip.links[0], heads[k]),
            )
        )
    return plans
