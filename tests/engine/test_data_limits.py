"""Dataset caps (worker/engine/limits.py): hostile uploads that describe huge data are refused before allocating.

Each attack here is a small file: a compressed .npz of zeros that declares gigabytes, labels [0, 1, 2, 10**7], a
tiny image zip with a huge image_size or a PNG header claiming millions of pixels, max_length past max_tokens,
JSONL nested 100k levels deep, a tokenizer regex that backtracks exponentially. Each is answered with a clean
EngineError ("limit_exceeded" naming the DISTILLERY_* setting, or "invalid_dataset"), quickly and in little memory.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.support import digits
from tests.support.archives import image_folder_zip
from worker.engine import DatasetSpec, EngineError, inspect_dataset
from worker.engine.data import load_dataset
from worker.engine.limits import SETTINGS, DataLimits

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024**2


def _npz_bomb(path: Path, shape: tuple[int, ...], dtype: str = "<f4", y: np.ndarray | None = None) -> Path:
    """An .npz whose x declares `shape` of zeros: a few hundred KB on disk, `shape` bytes once decompressed."""
    total = int(np.prod(shape)) * np.dtype(dtype).itemsize
    chunk = bytes(16 * MiB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
            left = total
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        if y is not None:
            buf = io.BytesIO()
            np.save(buf, y)
            zf.writestr("y.npy", buf.getvalue())
    assert path.stat().st_size < 2 * MiB
    return path


def _error(call, *args):
    with pytest.raises(EngineError) as info:
        call(*args)
    return info.value


def _assert_limit(err: EngineError, name: str, found: int | None = None) -> None:
    assert err.code == "limit_exceeded", (err.code, err.message)
    assert name in err.message and SETTINGS[name] in err.message, err.message
    if found is not None:
        assert str(found) in err.message, err.message


def _run(args: list[str], address_space: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "RAYON_NUM_THREADS": "1",
    }

    def limit():
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        preexec_fn=limit,
    )


# The child measures its own peak RSS around load_dataset and prints the outcome as JSON.
_MEASURE = """
import json, resource, sys, time
from worker.engine import DatasetSpec, EngineError
from worker.engine.data import load_dataset
from worker.engine.limits import DataLimits
spec = DatasetSpec(sys.argv[1], "npz")
limits = DataLimits.from_dict(json.loads(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.monotonic()
try:
    load_dataset(spec, limits)
    out = {"code": None}
except EngineError as exc:
    out = {"code": exc.code, "message": exc.message}
out["seconds"] = time.monotonic() - start
out["growth"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps(out))
"""


def test_npz_decompression_bomb_is_refused_quickly_in_little_memory(tmp_path):
    # 256 MiB of float32 zeros in a ~300 KB file; the cap is 32 MiB. The old reader decompressed it all (and
    # then copied it to float32): hundreds of MB of peak RSS before any check.
    bomb = _npz_bomb(tmp_path / "bomb.npz", (8192, 8192))
    proc = _run(["-c", _MEASURE, str(bomb), json.dumps({"max_dataset_bytes": 32 * MiB})])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == "limit_exceeded", out
    assert "max_dataset_bytes" in out["message"] and "DISTILLERY_MAX_DATASET_BYTES" in out["message"]
    assert out["growth"] < 32 * MiB, out
    assert out["seconds"] < 2.0, out


def test_inspect_child_under_1gib_address_space_answers_limit_exceeded(tmp_path):
    # x of shape [1, 2**28] uint8: 256 MiB decompressed, 2 GiB as int64, 2**28 values in one example (the
    # default cap is 2**24). Under RLIMIT_AS = 1 GiB the child answers, with the default limits, instead of
    # dying of MemoryError.
    bomb = _npz_bomb(tmp_path / "bomb.npz", (1, 2**28), dtype="|u1")
    proc = _run(["-m", "worker.inspect_child", "datasets", str(bomb), json.dumps({"format": "npz"})], 1024**3)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"]["code"] == "limit_exceeded", out
    assert "DISTILLERY_MAX_EXAMPLE_ELEMENTS" in out["error"]["message"] and str(2**28) in out["error"]["message"]
    assert "Traceback" not in proc.stdout and str(tmp_path) not in proc.stdout


def test_inspect_child_passes_limits_from_options(tmp_path):
    path = digits.write_npz(tmp_path / "d.npz", np.zeros((4, 3), np.float32), np.array([0, 1, 2, 3]))
    options = {"format": "npz", "limits": DataLimits(max_classes=3).to_dict()}
    proc = _run(["-m", "worker.inspect_child", "datasets", str(path), json.dumps(options)])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"]["code"] == "limit_exceeded" and "DISTILLERY_MAX_CLASSES" in out["error"]["message"], out
    options["limits"] = DataLimits(max_classes=4).to_dict()
    proc = _run(["-m", "worker.inspect_child", "datasets", str(path), json.dumps(options)])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["info"]["num_classes"] == 4, out


def test_too_many_values_per_example_is_refused_from_the_header(tmp_path):
    bomb = _npz_bomb(tmp_path / "wide.npz", (1, 2**24 + 1), dtype="|u1")
    start = time.monotonic()
    _assert_limit(_error(load_dataset, DatasetSpec(str(bomb), "npz")), "max_example_elements", 2**24 + 1)
    assert time.monotonic() - start < 1.0
    small = digits.write_npz(tmp_path / "small.npz", np.zeros((2, 10, 10), np.float32))
    limits = DataLimits(max_example_elements=99)
    _assert_limit(_error(load_dataset, DatasetSpec(str(small), "npz"), limits), "max_example_elements", 100)
    assert load_dataset(DatasetSpec(str(small), "npz"), DataLimits(max_example_elements=100)).input_shape == [10, 10]


def test_ten_million_classes_are_refused_and_the_info_stays_small(tmp_path):
    path = digits.write_npz(tmp_path / "labels.npz", np.zeros((4, 3), np.float32), np.array([0, 1, 2, 10**7]))
    assert path.stat().st_size < 2000
    start = time.monotonic()
    err = _error(inspect_dataset, DatasetSpec(str(path), "npz"))
    _assert_limit(err, "max_classes", 10**7 + 1)
    assert time.monotonic() - start < 1.0 and len(err.message) < 500
    # The same label in a CSV, a text table and string labels past the cap.
    csv = tmp_path / "labels.csv"
    csv.write_text("a,b,label\n" + "".join(f"0,1,{v}\n" for v in (0, 1, 10**7)))
    _assert_limit(_error(inspect_dataset, DatasetSpec(str(csv), "csv")), "max_classes", 10**7 + 1)
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text("".join(json.dumps({"input_ids": [1, 2], "label": v}) + "\n" for v in (0, 10**7)))
    _assert_limit(_error(inspect_dataset, DatasetSpec(str(jsonl), "jsonl")), "max_classes", 10**7 + 1)
    names = tmp_path / "names.csv"
    names.write_text("a,label\n" + "".join(f"0,c{i}\n" for i in range(11)))
    _assert_limit(_error(load_dataset, DatasetSpec(str(names), "csv"), DataLimits(max_classes=10)), "max_classes", 11)
    info = inspect_dataset(DatasetSpec(str(names), "csv"), DataLimits(max_classes=11))
    assert info["num_classes"] == 11 and len(json.dumps(info)) < 1000


def test_a_huge_image_size_is_refused_before_anything_is_decoded(tmp_path):
    path = image_folder_zip(tmp_path / "tiny.zip", per_class=1, classes=("a", "b"))
    for size in ([60_000, 60_000], [2048, 16]):
        start = time.monotonic()
        spec = DatasetSpec(str(path), "image_folder", image_size=size)
        _assert_limit(_error(load_dataset, spec), "max_image_size", max(size))
        assert time.monotonic() - start < 1.0
    assert load_dataset(DatasetSpec(str(path), "image_folder", image_size=[1024, 4])).x.shape == (2, 1, 1024, 4)
    spec = DatasetSpec(str(path), "image_folder", image_size=[32, 32])
    _assert_limit(_error(load_dataset, spec, DataLimits(max_dataset_bytes=2 * 32 * 32 * 4 - 1)), "max_dataset_bytes")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grayscale pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_whose_header_claims_too_many_pixels_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/0.png", _png_header_only(5000, 5000))  # 25M pixels: past the default 2**24
        zf.writestr("b/0.png", _png_header_only(5000, 5000))
    err = _error(load_dataset, DatasetSpec(str(path), "image_folder", image_size=[8, 8]))
    _assert_limit(err, "max_example_elements", 25_000_000)


def test_max_length_past_max_tokens_is_refused(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text('input_ids,label\n"1 2 3",0\n"4 5",1\n')
    _assert_limit(_error(load_dataset, DatasetSpec(str(path), "csv", max_length=9000)), "max_tokens", 9000)
    limits = DataLimits(max_tokens=64)
    _assert_limit(_error(load_dataset, DatasetSpec(str(path), "csv", max_length=65), limits), "max_tokens", 65)
    data = load_dataset(DatasetSpec(str(path), "csv", max_length=64), limits)
    assert data.x.shape == (2, 64) and data.x[0, :3].tolist() == [1, 2, 3]
    # Without max_length the default (128) is cut to the cap.
    assert load_dataset(DatasetSpec(str(path), "csv"), limits).x.shape == (2, 64)


def test_a_table_larger_than_the_memory_cap_is_refused_while_it_is_read(tmp_path):
    csv = tmp_path / "wide.csv"
    csv.write_text("a,b,c,label\n" + "1,2,3,0\n" * 1000)
    # 1000 rows of 3 float32 features and a label (a pointer to a shared string): 20 bytes a row.
    assert load_dataset(DatasetSpec(str(csv), "csv"), DataLimits(max_dataset_bytes=20_000)).rows == 1000
    _assert_limit(
        _error(load_dataset, DatasetSpec(str(csv), "csv"), DataLimits(max_dataset_bytes=19_999)), "max_dataset_bytes"
    )
    # A label is a class name, not a text: one 300-character label is refused (it would also have widened a
    # fixed-width string array of all the labels to 300 characters a row).
    long = tmp_path / "long.csv"
    long.write_text("a,label\n" + "0,x\n" * 10 + "0," + "y" * 300 + "\n")
    err = _error(load_dataset, DatasetSpec(str(long), "csv"))
    assert err.code == "invalid_dataset" and "300 characters" in err.message
    # JSONL rows that each bring new keys make a table of rows x all keys: refused, not built.
    jsonl = tmp_path / "keys.jsonl"
    jsonl.write_text("".join(json.dumps({"input_ids": [1], f"k{i}": 0}) + "\n" for i in range(3000)))
    _assert_limit(
        _error(load_dataset, DatasetSpec(str(jsonl), "jsonl"), DataLimits(max_dataset_bytes=20 * MiB)),
        "max_dataset_bytes",
    )


def test_parquet_is_checked_against_the_memory_cap(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2, 3]] * 2000, "label": [0, 1] * 1000}), path)
    spec = DatasetSpec(str(path), "parquet", max_length=64)
    assert load_dataset(spec, DataLimits(max_dataset_bytes=4 * MiB)).x.shape == (2000, 64)
    _assert_limit(_error(load_dataset, spec, DataLimits(max_dataset_bytes=MiB)), "max_dataset_bytes")


def test_pre_tokenised_ids_cannot_declare_a_huge_vocabulary(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_text(json.dumps({"input_ids": [1, 10**12], "label": 0}) + "\n")
    err = _error(load_dataset, DatasetSpec(str(path), "jsonl"))
    assert err.code == "invalid_dataset" and str(10**12) in err.message and "tokenizer" in err.message
    path.write_text(json.dumps({"input_ids": [1, 10**30], "label": 0}) + "\n")  # past int64: no OverflowError
    assert _error(load_dataset, DatasetSpec(str(path), "jsonl")).code == "invalid_dataset"


def test_deeply_nested_jsonl_is_a_clean_engine_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    top = tmp_path / "top.jsonl"
    top.write_text(deep + "\n")
    err = _error(load_dataset, DatasetSpec(str(top), "jsonl"))
    assert err.code == "invalid_dataset" and "nested too deeply" in err.message and "recursion" not in err.message
    cell = tmp_path / "cell.jsonl"
    cell.write_text(json.dumps({"input_ids": deep, "label": 0}) + "\n")
    err = _error(load_dataset, DatasetSpec(str(cell), "jsonl"))
    assert err.code == "invalid_dataset" and "input_ids" in err.message
    # The validation child answers the same, with no stack.
    proc = _run(["-m", "worker.inspect_child", "datasets", str(cell), json.dumps({"format": "jsonl"})])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"]["code"] == "invalid_dataset" and "Traceback" not in proc.stdout, out


def test_a_tokenizer_regex_that_backtracks_past_its_limit_is_a_clean_engine_error(tmp_path):
    # Oniguruma gives up on `(a+)+$` over a long run of a's and the Rust side panics: pyo3's PanicException is a
    # BaseException, which used to escape every `except Exception` and kill the child with a stack.
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+$"), behavior="isolated")
    tok.save(str(tmp_path / "tokenizer.json"))
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + "a" * 5000 + "b,0\nab,1\n")
    spec = DatasetSpec(str(path), "csv", text_column="text", tokenizer_path=str(tmp_path / "tokenizer.json"))
    err = _error(load_dataset, spec)
    assert err.code == "invalid_dataset" and "regular expression" in err.message, err.message


def test_ordinary_data_loads_within_the_default_limits(tmp_path):
    x, y, _, _ = digits.digits_arrays()
    npz = digits.write_npz(tmp_path / "d.npz", x[:50], y[:50])
    data = load_dataset(DatasetSpec(str(npz), "npz"))
    assert data.x.dtype == np.float32 and data.x.shape == (50, *x.shape[1:]) and np.array_equal(data.y, y[:50])
    csv = digits.write_csv(tmp_path / "d.csv", x[:30], y[:30])
    info = inspect_dataset(DatasetSpec(str(csv), "csv"))
    assert info["rows"] == 30 and info["num_classes"] == int(y[:30].max()) + 1
    big = tmp_path / "big.csv"
    big.write_text(",".join(f"f{i}" for i in range(1500)) + ",label\n" + ",".join(["0"] * 1500) + ",1\n")
    info = inspect_dataset(DatasetSpec(str(big), "csv"))
    assert len(info["columns"]) == 1000 and info["num_columns"] == 1501 and info["input"]["shape"] == [1500]


def test_data_limits_round_trip_and_validation():
    limits = DataLimits(max_classes=7, max_tokens=256)
    assert DataLimits.from_dict(json.loads(json.dumps(limits.to_dict()))) == limits
    assert DataLimits.from_dict(None) == DataLimits() == DataLimits.from_dict({})
    assert DataLimits().to_dict() == {
        "max_classes": 10_000,
        "max_example_elements": 16_777_216,
        "max_dataset_bytes": 8 * 1024**3,
        "max_image_size": 1024,
        "max_tokens": 8192,
    }
    assert set(SETTINGS) == set(DataLimits().to_dict())
    for bad in ({"max_classes": 0}, {"max_tokens": "8"}, {"max_image_size": True}, {"nope": 1}):
        with pytest.raises(EngineError) as info:
            DataLimits.from_dict(bad)
        assert info.value.code == "invalid_config"


def test_inspect_child_errors_carry_no_path_and_no_stack():
    from worker.inspect_child import _error, scrub

    err = _error("datasets", FileNotFoundError(2, "No such file or directory", "/srv/distillery/data/t1/up.npz"))
    assert err["code"] == "invalid_dataset" and "up.npz" in err["message"] and "/srv" not in err["message"]
    message = scrub('failed at /home/u/x.py line 3\nTraceback (most recent call last):\n  File "/a/b.py"\nKeyError: 1')
    assert "/home" not in message and "Traceback" not in message and "/a/b.py" not in message
    assert "x.py" in message and "KeyError: 1" in message
    assert scrub("accuracy 19/20 on C:\\Users\\me\\d.csv") == "accuracy 19/20 on d.csv"
    assert len(scrub("x" * 10_000)) <= 500
