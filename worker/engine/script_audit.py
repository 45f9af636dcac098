"""Read a TorchScript archive's code before anything loads it, and refuse operations that reach outside.

torch.jit.load runs the archive's `__setstate__` methods, and training runs its `forward` in our process
(an uploaded student is trained in the worker, beside other tenants' files). TorchScript can call
`torch.from_file` (read any file), `torch.save` (write one) and the distributed ops (open sockets), and a
module can choose to do so only outside the validation sandbox (on large batches, say). The archive
stores its code as text (code/**/*.py), which the loader compiles, so every call it can make is named
there: reading the tokens is a complete check, not a guess.
"""

from __future__ import annotations

import io
import tokenize
import zipfile

# Operations that touch the file system, whatever namespace reaches them.
FILE_OPS = {"from_file": "reads files", "load_tensor": "reads files", "save": "writes files"}
# Operator namespaces a model may call through torch.ops; the rest (c10d, symm_mem, debugprims, ...)
# reach the network, shared memory or the file system, or only exist for tests.
ALLOWED_NAMESPACES = {
    "aten",
    "prim",
    "prims",
    "quantized",
    "_quantized",
    "quantization",
    "mkldnn",
    "mkldnn_prepacked",
    "onednn",
    "mkl",
    "sparse",
    "rngprims",
    "_native",
}
MAX_CODE_BYTES = 64 * 1024**2  # more TorchScript source than any real model has: refuse, do not read


class ScriptRefused(ValueError):
    """The archive's code calls something a model file may not."""


def audit_torchscript(path: str) -> None:
    """Raise ScriptRefused when the TorchScript archive at `path` calls file, network or custom-class ops."""
    with zipfile.ZipFile(path) as archive:
        code = [i for i in archive.infolist() if "/code/" in i.filename and i.filename.endswith(".py")]
        if sum(i.file_size for i in code) > MAX_CODE_BYTES:
            raise ScriptRefused(f"the archive holds more than {MAX_CODE_BYTES // 1024**2} MiB of code")
        for info in code:
            _audit_source(archive.read(info).decode("utf-8", errors="replace"), info.filename.split("/code/", 1)[1])


def _audit_source(source: str, name: str) -> None:
    for chain in _dotted_names(source, name):
        last = chain[-1]
        # `save` is also an ordinary method name (self.save): only torch's and aten's write files.
        if last in FILE_OPS and (last != "save" or (len(chain) > 1 and chain[-2] in ("torch", "aten"))):
            raise ScriptRefused(
                f"its code ({name}) calls {'.'.join(chain)}, which {FILE_OPS[last]}; "
                "a model file may only compute on its inputs"
            )
        for i, part in enumerate(chain[:-1]):
            if part == "ops" and chain[i + 1] not in ALLOWED_NAMESPACES:
                raise ScriptRefused(
                    f"its code ({name}) calls operators of the namespace {chain[i + 1]!r} "
                    f"({'.'.join(chain)}); only the standard tensor operators are allowed"
                )
            if part == "torch" and chain[i + 1] == "classes":
                raise ScriptRefused(
                    f"its code ({name}) uses a custom C++ class ({'.'.join(chain)}); "
                    "only the standard tensor operators are allowed"
                )


def _dotted_names(source: str, name: str) -> list[list[str]]:
    """Every chain of names joined by dots (`torch.ops.aten.save`), whatever the spacing between them."""
    chains: list[list[str]] = []
    current: list[str] = []
    expect_name = False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                continue
            if tok.type == tokenize.NAME and (expect_name or not current):
                current.append(tok.string)
                expect_name = False
            elif tok.type == tokenize.OP and tok.string == "." and current and not expect_name:
                expect_name = True
            else:
                if current:
                    chains.append(current)
                current = [tok.string] if tok.type == tokenize.NAME else []
                expect_name = False
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise ScriptRefused(f"its code ({name}) cannot be read: {exc}") from exc
    if current:
        chains.append(current)
    return chains
