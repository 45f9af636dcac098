"""atomic_write: the file holds the old content or the whole new one, and no temporary file is left behind."""

import pytest

from worker.engine.atomic import atomic_write


def test_bytes_replace_the_file_and_leave_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    assert atomic_write(str(target), b"new content") == str(target)
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_writer_function_gets_a_path_in_the_same_folder(tmp_path):
    seen = []

    def write(path: str) -> None:
        seen.append(path)
        with open(path, "wb") as f:
            f.write(b"written")

    atomic_write(str(tmp_path / "b.bin"), write)
    assert (tmp_path / "b.bin").read_bytes() == b"written"
    assert seen[0].startswith(str(tmp_path)) and seen[0] != str(tmp_path / "b.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["b.bin"]


def test_a_failing_writer_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "c.bin"
    target.write_bytes(b"old")

    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(target), write)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["c.bin"]
