"""Read a TorchScript archive's code before anything loads it, and refuse operations that reach outside.

torch.jit.load runs the archive's `__setstate__` methods, and training runs its `forward` in our process
(an uploaded student is trained in the worker, beside other tenants' files). TorchScript can call
`torch.from_file` (read any file), `torch.save` (write one) and the distributed ops (open sockets), and a
module can choose to do so only outside the validation sandbox (on large batches, say). The archive
stores its code as text (code/**/*.py), which the loader compiles, so every call it can make is named
there; and its pickles name every class they build, which must be torch's own or the archive's compiled
ones (a custom C++ class's __setstate__ is C++ we cannot read).

The archive is read the way torch.jit.load reads it, not the way Python's zipfile does (which may even
see another central directory: zipfile looks for it just before the end record, miniz at the offset
the end record gives):
- with torch's own reader (caffe2/serialize/inline_container.cc, PyTorchStreamReader over miniz), which
  takes the first entry's folder as the archive's, and finds a member by binary search over the central
  directory compared case-insensitively (`mz_zip_reader_locate_file(..., flags=0)`), so
  `code/__torch__.PY` or `CODE/__torch__.py` is compiled like `code/__torch__.py`, and of two names that
  differ only in case either may be the one read: such archives are refused, and every code member is
  read whatever its case;
- the loader compiles `code/` + the class's qualified name + `.py` (import_export_helpers.cpp,
  `qualifierToArchivePath`) and unpickles `data.pkl`, `constants.pkl` and the sources' `.debug_pkl`;
  members outside torch.jit.save's layout are refused rather than guessed at;
- torch.jit.load takes a file whose bytes 4-8 read `PTMF` for a flatbuffer module (mobile/file_format.h
  checks that before the zip signature), which a zip reader never sees: refused.

The code is read as a syntax tree, so spacing, parentheses, `getattr(torch, "from_" "file")` and aliases
(`t = torch`) do not hide a call: the names the loader binds to operator namespaces (`torch`, `ops`,
`__torch__`, import_source.cpp) may only start an attribute chain, never be held in a variable, and string
literals that name a refused operation or a custom class are refused wherever they stand.
"""

from __future__ import annotations

import ast
import io
import pickletools
import re
import tokenize
from typing import TypeGuard, cast

import torch

# Operations that touch the file system, whatever namespace reaches them.
FILE_OPS = {"from_file": "reads files", "load_tensor": "reads files", "save": "writes files"}
# Remote calls, which TorchScript has as prim operators (prim::rpc_async, ...): the prim namespace is allowed.
NETWORK_OPS = {"rpc_async", "rpc_sync", "rpc_remote"}
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

# What torch.jit.save writes (names relative to the archive's folder, compared lower-cased as torch does).
_LAYOUT_FILES = {
    "data.pkl",
    "constants.pkl",
    "version",
    "byteorder",
    "traced_inputs.pkl",
    "bytecode.pkl",  # _save_for_lite_interpreter; torch.jit.load does not read it
}
_LAYOUT_FOLDERS = ("data/", "constants/", "traced_inputs/", "extra/", ".data/")
# Modules the TorchScript unpickler resolves itself (unpickler.cpp, readGlobal); any other global must be
# a class compiled from the archive's own code (__torch__.*).
_PICKLE_MODULES = {"torch", "torch._utils", "torch.jit._pickle", "collections", "builtins"}
_TYPE_COMMENT = re.compile(r"#\s*type\s*:", re.IGNORECASE)


class ScriptRefused(ValueError):
    """The archive's code calls something a model file may not."""


def audit_torchscript(path: str) -> None:
    """Raise ScriptRefused when the TorchScript archive at `path` calls file, network or custom-class ops."""
    with open(path, "rb") as f:
        if f.read(8)[4:8] == b"PTMF":
            raise ScriptRefused(
                "its header marks it a flatbuffer module, which torch.jit.load would run instead of "
                "the zip archive it also is"
            )
    try:
        reader = torch._C.PyTorchFileReader(path)
        records = reader.get_all_records()  # raises if an entry lies outside the archive's folder
    except (RuntimeError, ValueError) as exc:  # ValueError: a name that is not UTF-8
        raise ScriptRefused(f"torch cannot read it as an archive: {_first_line(exc)}") from exc
    seen: dict[str, str] = {}
    sources, pickles = [], []
    for name in records:
        key = name.lower()  # folds at least what miniz folds (ASCII letters): no two names torch confuses differ here
        if key in seen:
            raise ScriptRefused(
                f"it holds {seen[key]!r} and {name!r}, which torch takes for the same member; "
                "either could be the one it loads"
            )
        seen[key] = name
        if key.startswith("code/"):
            if key.endswith(".py"):
                sources.append(name)
            elif key.endswith(".py.debug_pkl"):
                pickles.append(name)
            else:
                raise ScriptRefused(f"its code folder holds {name!r}, which is not TorchScript source")
        elif key in _LAYOUT_FILES:
            if key.endswith(".pkl"):
                pickles.append(name)
        elif not key.startswith(_LAYOUT_FOLDERS):  # tensor bytes, extra files, ids: never compiled or unpickled
            raise ScriptRefused(f"it holds {name!r}, which torch.jit.save does not write")
    try:
        if sum(_record_size(reader, n) for n in sources + pickles) > MAX_CODE_BYTES:
            raise ScriptRefused(f"the archive holds more than {MAX_CODE_BYTES // 1024**2} MiB of code")
        for name in sources:
            try:
                source = reader.get_record(name).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ScriptRefused(f"its code ({name}) is not UTF-8 text: {exc}") from exc
            _audit_source(source, name.split("/", 1)[1])
        for name in pickles:
            _audit_pickle(reader.get_record(name), name)
    except RuntimeError as exc:
        raise ScriptRefused(f"torch cannot read a member of it: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _audit_source(source: str, name: str) -> None:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
        tree = ast.parse(source, filename=name)
    except (tokenize.TokenError, SyntaxError, ValueError) as exc:  # ValueError: a NUL byte
        raise ScriptRefused(f"its code ({name}) cannot be read: {exc}") from exc
    # The TorchScript lexer reads `# type:` comments as signatures, which Python's parser skips.
    for tok in tokens:
        if tok.type == tokenize.COMMENT and _TYPE_COMMENT.match(tok.string):
            raise ScriptRefused(f"its code ({name}) has a type comment, {tok.string!r}")
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
            _audit_string(text, name)
        if _is_getattr(node) and not _literal_name(node):
            raise ScriptRefused(f"its code ({name}) calls {ast.unparse(node.func)} with a computed name")
        if _is_chain(node) and not _extends(parents.get(node), node):
            _audit_chain(_chain(node), name)


def _is_getattr(node: ast.AST) -> TypeGuard[ast.Call]:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")


def _literal_name(node: ast.Call) -> bool:
    return len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)


def _is_chain(node: ast.AST) -> bool:
    return isinstance(node, (ast.Name, ast.Attribute)) or _is_getattr(node)


def _extends(parent: ast.AST | None, node: ast.AST) -> bool:
    """Whether `parent` continues the chain `node` starts (`node.x`, `getattr(node, "x")`)."""
    if isinstance(parent, ast.Attribute):
        return parent.value is node
    return parent is not None and _is_getattr(parent) and bool(parent.args) and parent.args[0] is node


def _chain(node: ast.AST) -> list[str]:
    """`torch.ops.aten.save` -> [torch, ops, aten, save]; getattr with a literal name is an attribute;
    a chain that starts on an expression (a call, a subscript) starts with "?"."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [*_chain(node.value), node.attr]
    if _is_getattr(node) and _literal_name(node):
        return [*_chain(node.args[0]), cast(str, cast(ast.Constant, node.args[1]).value)]  # _literal_name
    return ["?"]


def _audit_chain(chain: list[str], name: str) -> None:
    dotted = ".".join(chain)
    root = chain[0]
    for i, part in enumerate(chain):
        # `save` is also an ordinary method name (self.save): only torch's and the operators' write files.
        module_save = root in ("torch", "ops") or (i > 0 and chain[i - 1] in ("torch", "aten"))
        if part in FILE_OPS and (part != "save" or module_save):
            raise ScriptRefused(
                f"its code ({name}) calls {dotted}, which {FILE_OPS[part]}; a model file may only compute on its inputs"
            )
        if part in NETWORK_OPS:
            raise ScriptRefused(f"its code ({name}) calls {dotted}, which reaches other machines")
        if part == "ops" and i + 1 < len(chain) and chain[i + 1] not in ALLOWED_NAMESPACES:
            raise ScriptRefused(
                f"its code ({name}) calls operators of the namespace {chain[i + 1]!r} "
                f"({dotted}); only the standard tensor operators are allowed"
            )
        if part == "torch" and chain[i + 1 : i + 2] == ["classes"]:
            raise ScriptRefused(
                f"its code ({name}) uses a custom C++ class ({dotted}); only the standard tensor operators are allowed"
            )
    # A namespace held in a variable (`t = torch`, `f(ops.aten)`) would hide the chains above.
    if (
        (root == "torch" and (len(chain) == 1 or chain[-1] == "autograd"))
        or (root == "ops" and (len(chain) < 3 or chain[-1] == "autograd"))
        or (root == "__torch__" and (len(chain) == 1 or chain == ["__torch__", "torch"]))
    ):
        raise ScriptRefused(f"its code ({name}) uses the namespace {dotted} as a value; it may only call into it")


def _audit_string(text: str, name: str) -> None:
    """Strings name operations too: getattr's, type annotations ("torch.classes.x.Y"), operator names."""
    compact = re.sub(r"\s+", "", text)
    parts = [p for p in re.split(r"::|\.", compact) if p]
    refused = next((op for op in FILE_OPS if op != "save" and op in compact), None)
    if refused is None and parts and parts[-1] == "save":
        if len(parts) == 1 or "::" in compact or parts[0] in ("torch", "aten", "ops"):
            refused = "save"
    if refused:
        raise ScriptRefused(
            f"its code ({name}) names {refused} in the string {text!r}, which {FILE_OPS[refused]}; "
            "a model file may only compute on its inputs"
        )
    if any(op in compact for op in NETWORK_OPS):
        raise ScriptRefused(f"its code ({name}) names a remote call in the string {text!r}")
    if "torch.classes" in compact:
        raise ScriptRefused(f"its code ({name}) names a custom C++ class in the string {text!r}")
    namespace = re.fullmatch(r"(\w+)::\w+(\.\w+)?", compact)
    if namespace and namespace.group(1) not in ALLOWED_NAMESPACES:
        raise ScriptRefused(f"its code ({name}) names the operator {text!r} of the namespace {namespace.group(1)!r}")


def _audit_pickle(data: bytes, name: str) -> None:
    """The classes a pickle builds: torch's own, or the archive's compiled ones; never a custom C++ class."""
    debug = name.lower().endswith(".debug_pkl")  # source ranges: their strings are the original source text
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if "torch.classes" in f"{module}.{attr}":
                    raise ScriptRefused(f"its pickle {name} builds a custom C++ class ({module}.{attr})")
                if module not in _PICKLE_MODULES and module != "__torch__" and not module.startswith("__torch__."):
                    raise ScriptRefused(f"its pickle {name} builds {module}.{attr}, which TorchScript does not write")
            elif op.name == "STACK_GLOBAL":
                raise ScriptRefused(f"its pickle {name} takes a global from its stack, which TorchScript never writes")
            elif not debug and isinstance(arg, str) and "torch.classes" in arg:
                raise ScriptRefused(f"its pickle {name} names a custom C++ class ({arg!r})")
    except ScriptRefused:
        raise
    except Exception as exc:  # pickletools raises ValueError and friends on malformed input
        raise ScriptRefused(f"its pickle {name} cannot be read: {exc}") from exc


def _record_size(reader, name: str) -> int:
    """A member's size; torch before 2.12 has no get_record_size, so its bytes are read (code members are small)."""
    if hasattr(reader, "get_record_size"):
        return reader.get_record_size(name)
    return len(reader.get_record(name))
