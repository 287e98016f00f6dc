"""Unpacking a repository archive: files and directories below the target, nothing else."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from braid.artifacts.fetch import FetchError
from braid.artifacts.plan import unpack


def _archive(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def test_a_repository_unpacks_with_its_sizes_counted(tmp_path: Path) -> None:
    archive = _archive(
        tmp_path / "a.tar.gz", [_file("m/config.pbtxt", b"abc"), _file("m/1/model.onnx", b"12345")]
    )
    assert unpack(archive, tmp_path / "out", max_bytes=100) == 8
    assert (tmp_path / "out" / "m" / "1" / "model.onnx").read_bytes() == b"12345"


def test_setuid_bits_are_dropped(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar.gz", [_file("m/run", b"#!", mode=0o4777)])
    unpack(archive, tmp_path / "out", max_bytes=100)
    assert (tmp_path / "out" / "m" / "run").stat().st_mode & 0o7000 == 0


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
)
def test_links_and_devices_are_refused(tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("m/odd")
    info.type = kind
    info.linkname = "/etc/passwd"
    archive = _archive(tmp_path / "a.tar.gz", [_file("m/config.pbtxt"), (info, b"")])
    with pytest.raises(FetchError) as err:
        unpack(archive, tmp_path / "out", max_bytes=100)
    assert err.value.reason == "InvalidArchive"
    assert "m/odd" in str(err.value)
    assert not (tmp_path / "out" / "m" / "config.pbtxt").exists()  # nothing written first


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "m/../../x", "../x"])
def test_names_leaving_the_target_are_refused(tmp_path: Path, name: str) -> None:
    archive = _archive(tmp_path / "a.tar.gz", [_file(name)])
    with pytest.raises(FetchError, match="leaves the repository"):
        unpack(archive, tmp_path / "out", max_bytes=100)


def test_a_tar_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar.gz", [_file("m/big", b"0" * 1000)])
    with pytest.raises(FetchError) as err:
        unpack(archive, tmp_path / "out", max_bytes=100)
    assert err.value.reason == "ArtifactTooLarge"
