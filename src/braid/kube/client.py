"""The one place that talks to the Kubernetes API server.

Apply is server-side apply with a single field manager, so reconciling twice is a no-op and
the API server, not braid, merges what other managers own. Reads return plain dicts so the
pure layers never see client types.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, ResourceNotFoundError

from braid.logs import log_event

FIELD_MANAGER = "braid-operator"
logger = logging.getLogger(__name__)


# urllib3 keeps cpu_count * 5 connections per host by default (10 here); the operator runs
# 32 handler threads, and every call past the pool's size opened a fresh TLS connection and
# threw it away afterwards: handshakes that cost the API server more than the call itself.
CONNECTION_POOL_SIZE = 64


def load_api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG)."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return client.ApiClient(cfg)


class StatusConflictError(RuntimeError):
    """A status write kept losing to other writers (``Kube.update_status``)."""


TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def transient(exc: BaseException) -> bool:
    """An answer worth asking again: the API server was overloaded or timed out (a 504 when
    etcd is slow on a busy machine), which says nothing about the request itself."""
    return isinstance(exc, ApiException) and exc.status in TRANSIENT_STATUSES


REFUSED_STATUSES = frozenset({400, 403, 422})


def refusal(exc: BaseException) -> str | None:
    """The API server's message when it refused a request as invalid or forbidden (a 422 from
    the schema, a webhook or admission; a 400; a 403), which asking again will not change."""
    if not isinstance(exc, ApiException) or exc.status not in REFUSED_STATUSES:
        return None
    body = getattr(exc, "body", None)
    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or f"HTTP {exc.status}")[:1024]


class Kube:
    """Thin typed wrapper over the dynamic client: apply, get, list, patch status, delete."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or load_api_client()
        self.dyn = dynamic.DynamicClient(self.api_client)

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        """A client for the cluster a kubeconfig file names (the local stack, tests, benches)."""
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=cfg)
        cfg.connection_pool_maxsize = CONNECTION_POOL_SIZE
        return cls(client.ApiClient(cfg))

    def _resource(self, api_version: str, kind: str) -> Any:
        return self.dyn.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER) -> None:
        """Server-side apply ``obj``; conflicts are forced because braid owns these fields."""
        res = self._resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        _discard(
            res.server_side_apply(
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=field_manager,
                force_conflicts=True,
                serialize=False,
            )
        )
        log_event(
            logger,
            "kube.applied",
            level=logging.DEBUG,
            kind=obj["kind"],
            name=meta["name"],
            namespace=meta.get("namespace", ""),
        )

    def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            obj = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except (NotFoundError, ResourceNotFoundError):
            return None
        result: dict[str, Any] = obj.to_dict()
        return result

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        items = self._resource(api_version, kind).get(namespace=namespace, **kwargs)
        return [i.to_dict() for i in items.items]

    def patch_status(
        self, api_version: str, kind: str, name: str, namespace: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch the status subresource; a vanished object is not an error."""
        res = self._resource(api_version, kind)
        try:
            _discard(
                res.status.patch(
                    body={"status": status},
                    name=name,
                    namespace=namespace,
                    content_type="application/merge-patch+json",
                    serialize=False,
                )
            )
        except NotFoundError:
            return

    def update_status(
        self,
        api_version: str,
        kind: str,
        name: str,
        namespace: str,
        change: Callable[[dict[str, Any]], dict[str, Any] | None],
        *,
        attempts: int = 10,
    ) -> dict[str, Any] | None:
        """Merge-patch the status with ``change(stored status)``, on the version it was read
        from: the patch carries that ``resourceVersion``, so the API server refuses it (409)
        when another writer got in between, and it is built again on a fresh read. Two
        writers of one list (a merge patch replaces a whole ``conditions`` list) then never
        drop each other's entries. ``change`` returning None writes nothing. Returns the
        object as read for the write that landed; None when the object is gone."""
        res = self._resource(api_version, kind)
        for _ in range(attempts):
            obj = self.get(api_version, kind, name, namespace)
            if obj is None:
                return None
            patch = change(obj.get("status") or {})
            if patch is None:
                return obj
            body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}}
            try:
                _discard(
                    res.status.patch(
                        body={**body, "status": patch},
                        name=name,
                        namespace=namespace,
                        content_type="application/merge-patch+json",
                        serialize=False,
                    )
                )
            except ConflictError:
                continue
            except NotFoundError:
                return None
            return obj
        raise StatusConflictError(
            f"{kind} {namespace}/{name}: status still changing after {attempts} tries"
        )

    def create(self, obj: dict[str, Any]) -> None:
        """Create ``obj`` (an Event: each is a new object, never applied over another)."""
        res = self._resource(obj["apiVersion"], obj["kind"])
        _discard(res.create(body=obj, namespace=obj["metadata"].get("namespace"), serialize=False))

    def patch(
        self, api_version: str, kind: str, name: str, namespace: str, body: dict[str, Any]
    ) -> None:
        try:
            self._resource(api_version, kind).patch(
                body=body,
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except NotFoundError:
            return

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        """Delete one object; False when it was already gone."""
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except (NotFoundError, ApiException) as exc:
            if isinstance(exc, ApiException) and exc.status != 404:
                raise
            return False
        return True


def _discard(response: Any) -> None:
    """Read and drop a write's answer: nobody uses the object a write returns, and decoding a
    Deployment into the dynamic client's ResourceInstance costs more CPU than sending it."""
    response.drain_conn()
    response.release_conn()


@lru_cache(maxsize=1)
def default_kube() -> Kube:
    """One client per process: connection pools are reused, discovery is cached."""
    return Kube()
