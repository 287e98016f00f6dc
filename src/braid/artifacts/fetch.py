"""Fetch one artifact to disk: streamed, bounded in size and time, retried, digest-checked.

This is what the Triton pods' init container runs (``braid artifacts fetch``), in the spirit
of KServe's storage initializer but without its two reported failure modes: a stalled
download hangs it forever (kserve#5611: here every read has a timeout and the whole fetch a
deadline) and a large model is held in memory (kserve#5326: here bytes go from the socket
to a ``.part`` file in fixed chunks, hashed on the way, and a retry resumes with a Range
request instead of starting over).

Credentials never pass through braid's objects: the pod gets the provider's Secret as
environment variables (``envFrom``): ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``, ``AWS_REGION`` for object stores; an optional bearer token
(``BRAID_HTTPS_TOKEN``) for https; a CA bundle path (``BRAID_CA_BUNDLE``) for either.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from braid.api.artifact_uri import (
    HttpsLocation,
    NotFetchedError,
    ObjectStoreLocation,
    parse_location,
)
from braid.logs import log_event

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """The artifact could not be fetched; ``reason`` is a CamelCase word for conditions."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _RetryableError(Exception):
    """One attempt failed in a way a later attempt may not (network, 5xx, 429, a stall)."""


@dataclass(frozen=True)
class FetchOptions:
    connect_timeout_s: float = 10.0
    # A read that waits this long for the next bytes fails the attempt: a stalled server
    # costs one timeout and a retry, never a hung pod.
    read_timeout_s: float = 60.0
    # The whole fetch, retries included.
    deadline_s: float = 3600.0
    attempts: int = 5
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_bytes: int = 64 * 2**30
    chunk_bytes: int = 256 * 2**10


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    attempts: int


@dataclass
class _Stream:
    """An open response: its chunks from ``offset`` on, and the full size if known."""

    offset: int
    total: int | None
    iterator: Iterator[bytes]

    def chunks(self) -> Iterator[bytes]:
        return self.iterator


OpenAt = Callable[[int], AbstractContextManager[_Stream]]


def _https_opener(location: HttpsLocation, options: FetchOptions) -> OpenAt:
    headers = {"Accept-Encoding": "identity"}
    token = os.environ.get("BRAID_HTTPS_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ca_bundle = os.environ.get("BRAID_CA_BUNDLE")
    verify: Any = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
    timeout = httpx.Timeout(options.read_timeout_s, connect=options.connect_timeout_s)
    client = httpx.Client(headers=headers, timeout=timeout, verify=verify, follow_redirects=True)

    @contextmanager
    def open_at(offset: int) -> Iterator[_Stream]:
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with client.stream("GET", location.url, headers=extra) as response:
                status = response.status_code
                if status in (429,) or status >= 500:
                    raise _RetryableError(f"HTTP {status}")
                if status == 404:
                    raise FetchError("ArtifactNotFound", f"{location.url}: HTTP 404 not found")
                if status in (401, 403):
                    raise FetchError("ArtifactAccessDenied", f"{location.url}: HTTP {status}")
                if status not in (200, 206):
                    raise FetchError("ArtifactUnreachable", f"{location.url}: HTTP {status}")
                start = offset if status == 206 else 0
                length = response.headers.get("Content-Length")
                total = start + int(length) if length is not None else None
                # Bytes as they arrive: a stall loses at most one network read, not a chunk.
                yield _Stream(start, total, response.iter_raw())
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc

    return open_at


def _object_store_client(location: ObjectStoreLocation, options: FetchOptions) -> Any:
    """A MinIO SDK client (Apache-2.0; speaks to any S3-compatible store, GCS's included).

    Credentials: the Secret's ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` when set, a
    projected web-identity token (IRSA) when ``AWS_WEB_IDENTITY_TOKEN_FILE`` is set, else
    anonymous. No instance-metadata probing: a pod should say which identity it uses.
    """
    import urllib3
    from minio import Minio
    from minio.credentials.providers import EnvAWSProvider, IamAwsProvider, Provider

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL")
        or location.default_endpoint
        or f"https://s3.{os.environ.get('AWS_REGION', 'us-east-1')}.amazonaws.com"
    )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FetchError("InvalidEndpoint", f"AWS_ENDPOINT_URL {endpoint!r} is not http(s)://HOST")
    credentials: Provider | None = None
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        credentials = EnvAWSProvider()
    elif os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        credentials = IamAwsProvider()
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=options.connect_timeout_s, read=options.read_timeout_s),
        retries=False,  # the fetch loop retries, resuming
        ca_certs=os.environ.get("BRAID_CA_BUNDLE") or None,
    )
    return Minio(
        parts.netloc,
        secure=parts.scheme == "https",
        region=os.environ.get("AWS_REGION"),
        http_client=http,
        credentials=credentials,
    )


def _object_store_opener(location: ObjectStoreLocation, options: FetchOptions) -> OpenAt:
    import urllib3.exceptions
    from minio.error import MinioException, S3Error

    client = _object_store_client(location, options)
    name = f"{location.scheme}://{location.bucket}/{location.key}"

    @contextmanager
    def open_at(offset: int) -> Iterator[_Stream]:
        try:
            answer = client.get_object(location.bucket, location.key, offset=offset)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "ResourceNotFound"):
                raise FetchError("ArtifactNotFound", f"{name}: {exc.code}") from None
            if exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise FetchError("ArtifactAccessDenied", f"{name}: {exc.code}") from None
            status = exc.response.status if exc.response is not None else 0
            if status == 429 or status >= 500:
                raise _RetryableError(f"{exc.code} (HTTP {status})") from exc
            raise FetchError("ArtifactUnreachable", f"{name}: {exc.code}") from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc
        try:
            start = offset if answer.status == 206 else 0
            length = answer.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            yield _Stream(start, total, _guarded(answer.stream(options.chunk_bytes)))
        finally:
            answer.close()
            answer.release_conn()

    return open_at


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """urllib3's read errors mid-body surface as retryable, like httpx's do."""
    import urllib3.exceptions

    try:
        yield from chunks
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc


def opener_for(uri: str, options: FetchOptions) -> OpenAt:
    try:
        location = parse_location(uri)
    except NotFetchedError:
        raise FetchError(
            "UnsupportedScheme", f"{uri!r}: only s3://, gs:// and https:// are fetched"
        ) from None
    if isinstance(location, HttpsLocation):
        return _https_opener(location, options)
    return _object_store_opener(location, options)


class _Partial:
    """The ``.part`` file so far and the sha256 of its bytes, kept as they are written, so
    a large artifact is read once; a resume re-reads only what an earlier attempt wrote."""

    def __init__(self, path: Path, chunk: int) -> None:
        self.path = path
        self.digest = hashlib.sha256()
        self.size = 0
        if path.exists():
            with path.open("rb") as f:
                while block := f.read(chunk):
                    self.digest.update(block)
                    self.size += len(block)

    def restart(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0


def fetch(
    uri: str, dest: Path, sha256: str | None = None, options: FetchOptions | None = None
) -> Fetched:
    """Fetch ``uri`` to ``dest`` (atomically: a ``.part`` file renamed when complete).

    A digest mismatch, a missing object, refused credentials or an oversized artifact fail at
    once with a reason; network failures, 5xx, 429 and stalls are retried with exponential
    back-off, resuming where the last attempt stopped, until ``attempts`` or the deadline.
    """
    options = options or FetchOptions()
    try:
        open_at = opener_for(uri, options)
    except ValueError as exc:
        raise FetchError("InvalidArtifactURI", str(exc)) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    deadline = time.monotonic() + options.deadline_s
    expected = sha256.lower() if sha256 else None
    last_error = ""
    for attempt in range(1, options.attempts + 1):
        partial = _Partial(part, options.chunk_bytes)
        try:
            _stream_once(open_at, partial, options, deadline)
        except _RetryableError as exc:
            last_error = str(exc)
            wait = min(options.backoff_s * 2 ** (attempt - 1), options.backoff_max_s)
            log_event(
                log, "artifact_retry", uri=uri, attempt=attempt, error=last_error, wait_s=wait
            )
            if attempt == options.attempts or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
            continue
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        actual, size = partial.digest.hexdigest(), partial.size
        if expected is not None and actual != expected:
            part.unlink(missing_ok=True)
            raise FetchError(
                "DigestMismatch", f"{uri}: sha256 {actual} does not match the expected {expected}"
            )
        part.replace(dest)
        log_event(log, "artifact_fetched", uri=uri, bytes=size, sha256=actual, attempts=attempt)
        return Fetched(path=dest, size=size, sha256=actual, attempts=attempt)
    part.unlink(missing_ok=True)
    raise FetchError(
        "ArtifactUnreachable", f"{uri}: gave up after {options.attempts} attempts: {last_error}"
    )


def _stream_once(
    open_at: OpenAt, partial: _Partial, options: FetchOptions, deadline: float
) -> None:
    with open_at(partial.size) as body:
        if body.total is not None and body.total > options.max_bytes:
            raise FetchError(
                "ArtifactTooLarge", f"{body.total} bytes is over the limit of {options.max_bytes}"
            )
        # A server that ignores the Range header answers from byte 0: start the file over.
        if body.offset != partial.size:
            partial.restart()
        with partial.path.open("ab" if partial.size else "wb") as out:
            for chunk in body.chunks():
                if partial.size + len(chunk) > options.max_bytes:
                    raise FetchError(
                        "ArtifactTooLarge", f"over the limit of {options.max_bytes} bytes"
                    )
                if time.monotonic() > deadline:
                    raise FetchError("ArtifactFetchDeadline", "the fetch ran past its deadline")
                out.write(chunk)
                partial.digest.update(chunk)
                partial.size += len(chunk)
        if body.total is not None and partial.size < body.total:
            raise _RetryableError(f"connection closed at {partial.size} of {body.total} bytes")
