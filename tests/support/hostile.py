"""Hostile TorchScript modules for sandbox tests, built with torch.jit.script (import torch only here)."""

from __future__ import annotations

from pathlib import Path

import torch


class ReadsFile(torch.nn.Module):
    """Reads any file it can name with torch.from_file and returns its bytes as 'logits'."""

    def __init__(self, path: str, size: int):
        super().__init__()
        self.path = path
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.path, size=self.size, dtype=torch.uint8)
        return data.float().unsqueeze(0).repeat(x.shape[0], 1)


class StudentThatReadsOnLargeBatches(torch.nn.Module):
    """A trainable student that behaves in validation (small batches) and reads a file on training batches."""

    def __init__(self, path: str, size: int):
        super().__init__()
        self.path = path
        self.size = size
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        if x.shape[0] >= 8:
            data = torch.from_file(self.path, size=self.size, dtype=torch.uint8)
            out = out + data[:3].float()
        return out


class LoopsOnLargeBatches(torch.nn.Module):
    """A trainable student that answers small batches (validation, shape checks) and never returns on larger ones."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] >= 8:
            i = 0
            while i >= 0:
                i += 1
        return self.linear(x)


class WritesFile(torch.nn.Module):
    """Writes its input to a file of its choosing with torch.save on every call."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.save(x, self.path)
        return self.linear(x)


class LoopsForever(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i >= 0:
            i += 1
        return x


class AllocatesWithoutBound(torch.nn.Module):
    # Each block is filled and feeds the result, so the JIT cannot drop the allocations.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        total = torch.zeros(1)
        while bool(total.sum() >= 0):
            block = torch.full([1 << 24], float(len(parts)))
            parts.append(block)
            total = total + block[-1]
        return x * total


class Linear(torch.nn.Module):
    """A harmless teacher: features [N, 4] -> 3 logits."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class HangsOnLoad(torch.nn.Module):
    """Runs code in __setstate__, i.e. while torch.jit.load opens it (as upload validation does)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    @torch.jit.export
    def __getstate__(self) -> tuple[bool, int]:
        return (self.training, 0)

    @torch.jit.export
    def __setstate__(self, state: tuple[bool, int]) -> None:
        self.training = state[0]
        i = state[1]
        while i >= 0:
            i += 1


def save_script(module: torch.nn.Module, path: Path) -> Path:
    """torch.jit.script the module and save it."""
    torch.jit.script(module).save(str(path))
    return path


class ReadsFileOnLoad(torch.nn.Module):
    """Reads a file while torch.jit.load opens it, and keeps the bytes in its outputs."""

    def __init__(self, path: str, size: int):
        super().__init__()
        self.path = path
        self.size = size
        self.weight = torch.ones(3, 4)
        self.secret = torch.zeros(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() + self.secret

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool, torch.Tensor]:
        return (self.path, self.size, self.training, self.weight)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool, torch.Tensor]) -> None:
        self.path = state[0]
        self.size = state[1]
        self.training = state[2]
        self.weight = state[3]
        data = torch.from_file(self.path, size=self.size, dtype=torch.uint8)
        self.secret = data[:3].float()


class AllocatesOnLoad(torch.nn.Module):
    """Allocates without bound while torch.jit.load opens it."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    @torch.jit.export
    def __getstate__(self) -> tuple[bool, int]:
        return (self.training, 0)

    @torch.jit.export
    def __setstate__(self, state: tuple[bool, int]) -> None:
        self.training = state[0]
        parts: list[torch.Tensor] = []
        total = torch.zeros(1)
        while bool(total.sum() >= 0):
            block = torch.full([1 << 24], float(len(parts)))
            parts.append(block)
            total = total + block[-1]


def rewrite_archive(src: Path, dst: Path, rename=None, edit=None, extra=()) -> Path:
    """Copy a TorchScript zip member by member, as an attacker would hand-edit it (not torch.jit.save's output):
    `rename(name) -> name`, `edit(name, data) -> data`, then `extra` (name, data) members appended."""
    import zipfile

    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            name, data = info.filename, old.read(info)
            new.writestr(rename(name) if rename else name, edit(name, data) if edit else data)
        for name, data in extra:
            new.writestr(name, data)
    return dst


def flatbuffer_behind_zip(benign: Path, hostile: torch.nn.Module, dst: Path) -> Path:
    """One file that is two models: a zip archive (`benign`, what zipfile reads) and a flatbuffer module
    (`hostile`, what torch.jit.load runs, as it checks bytes 4-8 for b"PTMF" before the zip signature).

    A flatbuffer's first 4 bytes are the offset of its root table and every other offset is relative, so
    moving all but the first 8 bytes up by N and setting the root offset to b"PK\\x03\\x04" (67 MiB) keeps
    it valid; the zip goes in the gap, and zipfile finds it from its end record (what follows the end
    record reads as the archive's comment)."""
    import struct

    torch.jit.save_jit_module_to_flatbuffer(torch.jit.script(hostile), str(dst))
    flat = dst.read_bytes()
    assert flat[4:8] == b"PTMF"
    shift = struct.unpack("<I", b"PK\x03\x04")[0] - struct.unpack("<I", flat[:4])[0]
    zipped = benign.read_bytes()
    assert shift % 8 == 0 and len(zipped) < shift
    dst.write_bytes(b"PK\x03\x04" + flat[4:8] + bytes(shift - len(zipped)) + zipped + flat[8:])
    return dst
