"""Where an artifact lives, parsed from its URI. Pure: no I/O, so admission, the operator's
render and the fetcher agree on what a URI means.

Schemes a cluster fetches: ``s3://BUCKET/KEY`` (any S3-compatible store; the endpoint comes
from the credentials), ``gs://BUCKET/KEY`` (Google Cloud Storage through its S3-compatible
XML API, so the same code serves), ``https://HOST/PATH`` and ``pvc://CLAIM/SUBPATH`` (a
volume, mounted rather than fetched). ``file://`` exists only for the local stack, where it
names a directory on this machine; a cluster refuses it (see ``braid.api``'s admission).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

FETCHED_SCHEMES = ("s3", "gs", "https")
NOT_FETCHED_SCHEMES = ("pvc", "configmap", "file")
"""Schemes a Block mounts (or, ``file://``, the local stack reads) rather than fetches."""
GCS_S3_ENDPOINT = "https://storage.googleapis.com"


class ArtifactLocationError(ValueError):
    """The URI names nothing braid can fetch; the message says which part is wrong."""


class NotFetchedError(ArtifactLocationError):
    """A valid braid URI that is mounted, not fetched (``pvc://``, ``configmap://``,
    ``file://``)."""


@dataclass(frozen=True)
class ObjectStoreLocation:
    """An object in an S3-compatible store."""

    scheme: Literal["s3", "gs"]
    bucket: str
    key: str

    @property
    def default_endpoint(self) -> str | None:
        """gs:// goes to GCS's S3-compatible endpoint; s3:// to the credentials' endpoint."""
        return GCS_S3_ENDPOINT if self.scheme == "gs" else None


@dataclass(frozen=True)
class HttpsLocation:
    url: str


Location = ObjectStoreLocation | HttpsLocation


def _clean_relative(path: str, uri: str) -> str:
    """A relative path that stays inside its root: no ``..`` segment, no empty segment."""
    parts = path.split("/")
    if any(p in ("..", ".") for p in parts):
        raise ArtifactLocationError(f"{uri!r}: the path may not contain '.' or '..' segments")
    return posixpath.normpath(path) if path else ""


def parse_location(uri: str) -> Location:
    """The location a URI names, or ``ArtifactLocationError`` saying why there is none."""
    if len(uri) > 2048:
        raise ArtifactLocationError("the URI is longer than 2048 characters")
    if any(ord(c) < 0x21 or c == "\\" for c in uri):
        raise ArtifactLocationError(f"{uri!r}: whitespace, control characters and '\\' are refused")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ArtifactLocationError(f"{uri!r}: expected SCHEME://..., e.g. s3://bucket/key")
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise ArtifactLocationError(f"{uri!r}: expected {scheme}://BUCKET/KEY")
        return ObjectStoreLocation(scheme=scheme, bucket=bucket, key=_clean_relative(key, uri))  # type: ignore[arg-type]
    if scheme == "https":
        parts = urlsplit(uri)
        if not parts.hostname:
            raise ArtifactLocationError(f"{uri!r}: an https:// URI needs a host")
        if parts.username or parts.password:
            raise ArtifactLocationError(
                f"{uri!r}: credentials in the URI are refused; reference a Secret instead"
            )
        return HttpsLocation(url=uri)
    if scheme in NOT_FETCHED_SCHEMES:
        raise NotFetchedError(f"{uri!r}: {scheme}:// is mounted, not fetched")
    known = ", ".join(f"{s}://" for s in FETCHED_SCHEMES)
    raise ArtifactLocationError(f"{uri!r}: unknown scheme {scheme!r} (known: {known})")
