"""Atomic writes keep the old file until the new one is complete and leave no temp files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from osf.utils.atomic import atomic_open, atomic_path, atomic_write_text


def test_failed_write_keeps_previous_content_and_no_temp(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "sub" / "result.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_successful_write_replaces_and_suffix_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "cache.npz"
    with atomic_path(target, suffix=".npz") as tmp:
        assert tmp.name.endswith(".npz") and tmp.parent == tmp_path
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]


def test_written_file_gets_the_usual_permissions_not_mkstemps_private_ones(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives a new file under this umask
    target = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == 0o666 & ~umask


def test_a_full_disk_names_the_file_keeps_the_old_one_and_leaves_no_temp(tmp_path: Path) -> None:
    import errno

    target = atomic_write_text(tmp_path / "signals.npy", "old")

    with pytest.raises(OSError) as info, atomic_open(target, suffix=".npy") as fh:
        fh.write(b"new con")
        raise OSError(errno.ENOSPC, "No space left on device")  # what write(2) says, without the file
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signals.npy"]
