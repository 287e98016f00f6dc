"""Artifacts by URI against real stores: nginx over TLS for https://, versitygw for s3://.

What the Triton pods' init container does (``braid artifacts``): stream to disk, check the
digest, retry and resume after a stall, refuse what is missing, forbidden, oversized or
hostile with a reason, and never hold the artifact in memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from braid.api.common import ArtifactRef
from braid.api.repository_plan import PlannedArtifact, RepositoryPlan, ServingSettings
from braid.api.v1alpha1.block import BlockSpec
from braid.artifacts.fetch import FetchError, FetchOptions, fetch
from braid.artifacts.plan import assemble
from braid.render.model_repository import render_repository_plan
from braid.settings import get_settings
from braid_dev.reliability.stall_proxy import StallProxy
from braid_dev.stack.artifact_servers import (
    HttpsStore,
    S3Store,
    start_https_store,
    start_s3_store,
)

pytestmark = pytest.mark.integration

MIB = 2**20
QUICK = FetchOptions(read_timeout_s=2.0, attempts=3, backoff_s=0.1)


def _blob(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1))[:size]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    (root / "models").mkdir()
    (root / "private").mkdir()
    (root / "models" / "block.pt").write_bytes(_blob(3 * MIB + 17))
    (root / "private" / "link.pt").write_bytes(_blob(MIB, seed=1))
    return root


@pytest.fixture(scope="module")
def https(store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsStore]:
    store = start_https_store(store_root, tmp_path_factory.mktemp("nginx"))
    yield store
    store.stop()


@pytest.fixture(scope="module")
def s3(store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    # versitygw's posix backend: each folder of its root is a bucket.
    store = start_s3_store(store_root, tmp_path_factory.mktemp("versitygw"), get_settings().bin_dir)
    yield store
    store.stop()


@pytest.fixture
def ca_env(https: HttpsStore, monkeypatch: pytest.MonkeyPatch) -> HttpsStore:
    monkeypatch.setenv("BRAID_CA_BUNDLE", str(https.ca_path))
    return https


@pytest.fixture
def s3_env(s3: S3Store, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    return s3


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_https_fetch_checks_the_digest(
    ca_env: HttpsStore, store_root: Path, tmp_path: Path
) -> None:
    source = store_root / "models" / "block.pt"
    got = fetch(f"{ca_env.url}/models/block.pt", tmp_path / "m.pt", _sha(source), QUICK)
    assert got.sha256 == _sha(source)
    assert (tmp_path / "m.pt").read_bytes() == source.read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_a_digest_mismatch_leaves_no_file(ca_env: HttpsStore, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        fetch(f"{ca_env.url}/models/block.pt", tmp_path / "m.pt", "0" * 64, QUICK)
    assert err.value.reason == "DigestMismatch"
    assert list(tmp_path.iterdir()) == []


def test_https_refusals_carry_their_reason(ca_env: HttpsStore, tmp_path: Path) -> None:
    cases = {
        f"{ca_env.url}/models/missing.pt": "ArtifactNotFound",
        f"{ca_env.url}/private/link.pt": "ArtifactAccessDenied",
        "ftp://host/model.pt": "InvalidArtifactURI",
        "file:///etc/shadow": "UnsupportedScheme",
        "pvc://claim/model.pt": "UnsupportedScheme",
    }
    for uri, reason in cases.items():
        with pytest.raises(FetchError) as err:
            fetch(uri, tmp_path / "x", None, QUICK)
        assert err.value.reason == reason, uri


def test_a_bearer_token_from_the_secret_opens_the_private_location(
    ca_env: HttpsStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRAID_HTTPS_TOKEN", ca_env.token)
    got = fetch(f"{ca_env.url}/private/link.pt", tmp_path / "l.pt", None, QUICK)
    assert got.size == MIB


def test_an_untrusted_certificate_is_refused(https: HttpsStore, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as err:
        fetch(f"{https.url}/models/block.pt", tmp_path / "m.pt", None, QUICK)
    assert err.value.reason == "ArtifactUnreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)


def test_a_stalled_download_times_out_and_resumes(
    ca_env: HttpsStore, store_root: Path, tmp_path: Path
) -> None:
    source = store_root / "models" / "block.pt"
    with StallProxy(("127.0.0.1", ca_env.port), stall_after=2 * MIB) as proxy:
        got = fetch(
            f"https://127.0.0.1:{proxy.port}/models/block.pt",
            tmp_path / "m.pt",
            _sha(source),
            QUICK,
        )
    assert got.attempts == 2
    assert got.sha256 == _sha(source)
    # The second attempt asked for the rest only: nginx answered 206 Partial Content (the
    # stalled first request is logged when its connection closes, so order says nothing).
    log = ca_env.access_log.read_text()
    assert '"GET /models/block.pt HTTP/1.1" 206' in log


def test_an_oversized_artifact_is_refused(ca_env: HttpsStore, tmp_path: Path) -> None:
    small = FetchOptions(read_timeout_s=2.0, attempts=1, max_bytes=MIB)
    with pytest.raises(FetchError) as err:
        fetch(f"{ca_env.url}/models/block.pt", tmp_path / "m.pt", None, small)
    assert err.value.reason == "ArtifactTooLarge"
    assert list(tmp_path.iterdir()) == []


def test_s3_fetch_with_the_secrets_credentials(
    s3_env: S3Store, store_root: Path, tmp_path: Path
) -> None:
    source = store_root / "models" / "block.pt"
    got = fetch("s3://models/block.pt", tmp_path / "m.pt", _sha(source), QUICK)
    assert got.size == source.stat().st_size


def test_s3_refusals_carry_their_reason(
    s3_env: S3Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as err:
        fetch("s3://models/missing.pt", tmp_path / "x", None, QUICK)
    assert err.value.reason == "ArtifactNotFound"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" * 8)
    with pytest.raises(FetchError) as err:
        fetch("s3://models/block.pt", tmp_path / "x", None, QUICK)
    assert err.value.reason == "ArtifactAccessDenied"


def test_an_unreachable_store_gives_up_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from braid_dev.stack.ports import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(FetchError) as err:
        fetch("s3://models/block.pt", tmp_path / "x", None, QUICK)
    assert err.value.reason == "ArtifactUnreachable"
    assert "3 attempts" in str(err.value)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_assemble_unpacks_a_repository_and_writes_the_blocks_serving(
    s3_env: S3Store, store_root: Path, tmp_path: Path
) -> None:
    exported = 'name: "block-0"\nbackend: "python"\nmax_batch_size: 8\n'
    archive = _tar_gz(
        {
            "block-0/config.pbtxt": exported.encode(),
            "block-0/1/model.onnx": b"weights",
            "block-0/1/model.py": b"# runtime",
        }
    )
    (store_root / "models" / "repo.tar.gz").write_bytes(archive)
    plan = RepositoryPlan(
        artifacts=[
            PlannedArtifact(
                uri="s3://models/repo.tar.gz",
                sha256=hashlib.sha256(archive).hexdigest(),
                dest="repo",
                unpack=True,
            )
        ],
        repository="repo",
        models=["block-0"],
        serving=ServingSettings(
            max_batch_size=32, instance_kind="KIND_GPU", instance_count=2, gpus=[0]
        ),
    )
    assemble(plan, tmp_path / "models", QUICK)
    assert (
        tmp_path / "models" / "repo" / "block-0" / "1" / "model.onnx"
    ).read_bytes() == b"weights"
    config = (tmp_path / "models" / "repo" / "block-0" / "config.pbtxt").read_text()
    assert "max_batch_size: 32" in config
    assert "kind: KIND_GPU" in config


def test_a_repository_without_a_served_model_is_refused(
    s3_env: S3Store, store_root: Path, tmp_path: Path
) -> None:
    archive = _tar_gz({"other/config.pbtxt": b'name: "other"\n'})
    (store_root / "models" / "partial.tar.gz").write_bytes(archive)
    plan = RepositoryPlan(
        artifacts=[PlannedArtifact(uri="s3://models/partial.tar.gz", dest="repo", unpack=True)],
        repository="repo",
        models=["block-0"],
    )
    with pytest.raises(FetchError) as err:
        assemble(plan, tmp_path / "models", QUICK)
    assert err.value.reason == "ModelMissingFromRepository"


def test_a_hostile_archive_writes_nothing_outside(
    s3_env: S3Store, store_root: Path, tmp_path: Path
) -> None:
    archive = _tar_gz({"../../escaped.txt": b"owned"})
    (store_root / "models" / "evil.tar.gz").write_bytes(archive)
    plan = RepositoryPlan(
        artifacts=[PlannedArtifact(uri="s3://models/evil.tar.gz", dest="repo", unpack=True)]
    )
    with pytest.raises(FetchError) as err:
        assemble(plan, tmp_path / "models", QUICK)
    assert err.value.reason == "InvalidArchive"
    assert not list(tmp_path.rglob("escaped.txt"))


@pytest.mark.parametrize("dest", ["/etc/passwd", "../outside", "a/../../b"])
def test_a_plan_cannot_name_a_path_outside_the_repository(dest: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        PlannedArtifact(uri="s3://models/block.pt", dest=dest)


def test_the_cli_writes_the_reason_where_the_kubelet_reads_it(
    ca_env: HttpsStore, tmp_path: Path
) -> None:
    termination = tmp_path / "termination-log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "braid.cli",
            "artifacts",
            "fetch",
            f"{ca_env.url}/models/missing.pt",
            f"--dest={tmp_path / 'm.pt'}",
            f"--termination-log={termination}",
            "--attempts=1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
    )
    assert done.returncode == 1
    assert termination.read_text().startswith("ArtifactNotFound: ")


def test_a_large_artifact_streams_without_being_held_in_memory(
    ca_env: HttpsStore, store_root: Path, tmp_path: Path
) -> None:
    size = 256 * MIB
    big = store_root / "models" / "big.bin"
    with big.open("wb") as out:
        chunk = _blob(MIB, seed=2)
        for _ in range(size // MIB):
            out.write(chunk)
    script = (
        "import resource, sys\n"
        "from braid.artifacts.fetch import fetch\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "got = fetch(sys.argv[1], __import__('pathlib').Path(sys.argv[2]))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(got.size, (after - before) * 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"{ca_env.url}/models/big.bin", str(tmp_path / "big")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    fetched, grown = (int(v) for v in done.stdout.split())
    assert fetched == size
    # The peak resident set grew by a few chunks, not by the artifact.
    assert grown < size // 8, f"peak RSS grew {grown} bytes while fetching {size}"
    big.unlink()


def test_the_host_pods_plan_delivers_its_links_own_artifacts(
    s3_env: S3Store, store_root: Path, tmp_path: Path
) -> None:
    """The plan the operator renders for a host Block serving two Links, carried out by the
    fetcher: each Link's artifact is what its model serves, beside the host's own models."""
    config = 'name: "{}"\nbackend: "python"\nmax_batch_size: 8\n'
    block_archive = _tar_gz(
        {
            "mnist-cnn.b0/config.pbtxt": config.format("mnist-cnn.b0").encode(),
            "mnist-cnn.b0/1/model.onnx": b"block weights",
            # The repository ships the ONNX link's config and runner, stale weights.
            "xout/config.pbtxt": config.format("xout").encode(),
            "xout/1/model.py": b"# runtime",
            "xout/1/model.onnx": b"stale link weights",
        }
    )
    link_archive = _tar_gz(
        {
            "config.pbtxt": config.format("xin").encode(),
            "1/model.py": b"# runtime",
            "1/model.onnx": b"entry link weights",
        }
    )
    (store_root / "models" / "host.tar.gz").write_bytes(block_archive)
    (store_root / "models" / "xin.tar.gz").write_bytes(link_archive)
    (store_root / "models" / "xout.onnx").write_bytes(b"exit link weights")
    host = BlockSpec.model_validate(
        {
            "modelRef": {"name": "mnist-cnn"},
            "partitions": {"first": 0, "last": 0},
            "tier": "local",
            "modelRepository": {"uri": "s3://models/host.tar.gz"},
        }
    )
    links = {
        "xin": ArtifactRef(
            uri="s3://models/xin.tar.gz",
            format="triton-repository",
            sha256=hashlib.sha256(link_archive).hexdigest(),
        ),
        "xout": ArtifactRef(uri="s3://models/xout.onnx"),
    }
    plan = render_repository_plan(host, ["mnist-cnn.b0", "xin", "xout"], links)
    assemble(plan, tmp_path / "models", QUICK)
    repository = tmp_path / "models" / plan.repository
    assert (repository / "xin" / "1" / "model.onnx").read_bytes() == b"entry link weights"
    assert (repository / "xout" / "1" / "model.onnx").read_bytes() == b"exit link weights"
    assert (repository / "mnist-cnn.b0" / "1" / "model.onnx").read_bytes() == b"block weights"
    # The Block's serving settings reach the links' configs too.
    assert "max_batch_size: 32" in (repository / "xin" / "config.pbtxt").read_text()
