"""Reading a Model's path catalog, bounded: from ``configmap://`` in the Model's namespace, or
``file://`` where the operator allows local paths (the local stack). Nothing read is ever
quoted back into a status or an Event."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import ValidationError

from braid.api.catalog import PathCatalog
from braid.kube.client import Kube
from braid.kube.errors import DependencyMissingError, SpecError
from braid.render.admission import AdmissionConfig

CATALOG_MAX_BYTES = 4 * 1024 * 1024
"""The largest catalog read (a ConfigMap holds at most 1 MiB; a built catalog is kilobytes)."""


def _parse_catalog(uri: str, text: str | bytes) -> PathCatalog:
    """The catalog, or an error that says how it failed without quoting what was read."""
    try:
        return PathCatalog.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]["type"] if exc.error_count() else "invalid"
        raise SpecError(
            "CatalogInvalid",
            f"spec.catalog.uri: {uri} is not a valid path catalog "
            f"({exc.error_count()} problems, the first: {first})",
        ) from exc


def _read_local_file(uri: str, path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file: a FIFO, a device or /proc file could block
    or never end, so only regular files are opened, without blocking, and read once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as exc:
        raise DependencyMissingError(
            "CatalogUnavailable", f"spec.catalog.uri: {uri}: {exc.strerror}"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SpecError("CatalogUnsupported", f"spec.catalog.uri: {uri} is not a regular file")
        if info.st_size > limit:
            raise SpecError(
                "CatalogTooLarge", f"spec.catalog.uri: {uri} is larger than {limit} bytes"
            )
        return os.read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)


def load_catalog(
    kube: Kube, uri: str, namespace: str, config: AdmissionConfig | None = None
) -> PathCatalog:
    """A Model's path catalog from ``configmap://name[/key]`` in the Model's namespace, or
    ``file://`` where local paths are allowed (the local stack). Reads are bounded in size;
    a ConfigMap read is one API call with the client's timeout."""
    config = config or AdmissionConfig()
    scheme, _, rest = uri.partition("://")
    if scheme == "file":
        if not config.allow_local_paths:
            raise SpecError(
                "LocalPathRefused",
                f"spec.catalog.uri: {uri}: file:// is refused in cluster mode "
                "(allowed on the local stack only); use configmap://",
            )
        return _parse_catalog(
            uri, _read_local_file(uri, Path("/" + rest.lstrip("/")), CATALOG_MAX_BYTES)
        )
    if scheme == "configmap":
        name, _, key = rest.partition("/")
        cm = kube.get("v1", "ConfigMap", name, namespace)
        data = (cm or {}).get("data") or {}
        text = data.get(key or "catalog.json")
        if text is None:
            raise DependencyMissingError(
                "CatalogUnavailable", f"catalog {uri}: ConfigMap or key not found in {namespace}"
            )
        if len(text) > CATALOG_MAX_BYTES:
            raise SpecError(
                "CatalogTooLarge",
                f"spec.catalog.uri: {uri} is larger than {CATALOG_MAX_BYTES} bytes",
            )
        return _parse_catalog(uri, text)
    raise SpecError("CatalogUnsupported", f"spec.catalog.uri: scheme {scheme!r} not readable here")
