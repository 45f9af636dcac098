"""Open teacher (and uploaded student) files by content: TorchScript, torch.export (.pt2) and ONNX."""

from __future__ import annotations

import logging
import os
import re
import warnings
import zipfile
from typing import Any, cast

import numpy as np
import torch

from worker.engine.errors import EngineError
from worker.engine.onnx_params import onnx_parameter_count
from worker.engine.script_audit import ScriptRefused, audit_torchscript

logger = logging.getLogger(__name__)

SUPPORTED = "TorchScript (torch.jit.save), torch.export program (.pt2, torch.export.save) or ONNX"
_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float16)": np.float16,
}


def sniff_format(path: str) -> str:
    """Recognise a model file by content: "torchscript", "pt2" or "onnx"; anything else is refused."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise EngineError("invalid_model", f"cannot read the model file: {exc}") from exc
    if head.startswith(b"PK"):
        return _sniff_zip(path)
    if _is_tar(path):
        return "hf"
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode: never unpickle user files
        raise EngineError(
            "invalid_model",
            f"this is a raw Python pickle, which is refused for safety; upload a {SUPPORTED} model",
        )
    if _onnx_graph(path) is not None:
        return "onnx"
    raise EngineError("invalid_model", f"unrecognised model file; upload a {SUPPORTED} model")


def _sniff_zip(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise EngineError("invalid_model", f"corrupt zip archive: {exc}") from exc
    from contract.hf_folder import folder_root

    if folder_root(names) is not None:
        return "hf"
    # torch's zip reader finds members in any case (miniz compares names case-insensitively): so do we.
    parts = [n.split("/", 1)[1].lower() for n in names if "/" in n]
    if any(p.startswith("code/") for p in parts) and "constants.pkl" in parts:
        # Before anything loads it: loading runs the archive's own code (see script_audit).
        try:
            audit_torchscript(path)
        except ScriptRefused as exc:
            raise EngineError("invalid_model", f"this TorchScript model is refused: {exc}") from exc
        except (zipfile.BadZipFile, OSError) as exc:
            raise EngineError("invalid_model", f"corrupt zip archive: {exc}") from exc
        return "torchscript"
    if "archive_format" in parts or any(p.startswith("models/") for p in parts):
        return "pt2"
    if "data.pkl" in parts:
        raise EngineError(
            "invalid_model",
            "this is a torch.save archive (a pickled module or state_dict), "
            f"which cannot be run without its Python code; export a {SUPPORTED} model, "
            "e.g. torch.jit.save(torch.jit.script(model), 'teacher.pt')",
        )
    raise EngineError("invalid_model", f"unrecognised zip archive; upload a {SUPPORTED} model")


def _is_tar(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(512)[257:262] == b"ustar"


def _onnx_graph(path: str):
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # protobuf raises several types on garbage
        return None
    if not model.graph.node or not model.opset_import or not model.graph.output:
        return None
    return model


_DEVICE_MISMATCH = re.compile(r"same device|Expected all tensors to be on the same device|device mismatch", re.I)


class Teacher:
    """A loaded model behind one callable: `teacher(x)` gives float32 logits [N, C] on `device`."""

    def __init__(self, path: str, device: str = "cpu"):
        self.path = path
        self.device = device
        self.format = sniff_format(path)
        self.size_bytes = os.path.getsize(path)
        self.fixed_batch: int | None = None  # a .pt2 program exported with a static batch size runs only at that size
        self.module: Any = None
        self.input_shape: list[int | None] | None = None
        self.input_dtype: type | None = None
        if self.format == "hf":
            from worker.engine.hf_teacher import load_hf_classifier

            self.module, info = load_hf_classifier(path, device)
            self.num_parameters, self.input_shape, self.input_dtype = info["num_parameters"], None, None
        elif self.format == "torchscript":
            self._load_torchscript()
        elif self.format == "pt2":
            self._load_pt2()
        else:
            self._load_onnx()

    def _load_torchscript(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = torch.jit.load(self.path, map_location=self.device)
        except Exception as exc:
            raise EngineError("invalid_model", f"cannot load the TorchScript model: {exc}") from exc
        self.module.eval()
        self.num_parameters = sum(p.numel() for p in self.module.parameters())
        self.input_shape, self.input_dtype = None, None  # TorchScript does not record input sizes

    def _load_pt2(self) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.load(self.path)
                module = program.module()
        except Exception as exc:
            raise EngineError("invalid_model", f"cannot load the torch.export (.pt2) program: {exc}") from exc
        try:
            module = module.to(self.device)
        except Exception as exc:  # some programs bake in their device; they then run where they were saved
            logger.info("cannot move the .pt2 program to %s: %s", self.device, exc)
        # The program was captured in the mode it was exported in (eval for a teacher); .eval() is refused.
        self.module = module
        signature = program.graph_signature
        state = program.state_dict
        self.num_parameters = int(sum(state[n].numel() for n in signature.parameters if n in state))
        self.input_shape, self.input_dtype = None, None
        values = [
            node.meta.get("val")
            for node in program.graph.nodes
            if node.op == "placeholder" and node.name in signature.user_inputs
        ]
        if len(values) != 1:
            raise EngineError("invalid_model", f"the .pt2 program takes {len(values)} inputs; one tensor is supported")
        value = values[0]
        if isinstance(value, torch.Tensor):
            self.input_shape = [d if isinstance(d, int) else None for d in value.shape]
            self.input_dtype = np.dtype(str(value.dtype).removeprefix("torch.")).type
            if self.input_shape and isinstance(self.input_shape[0], int):
                self.fixed_batch = self.input_shape[0]

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        graph = _onnx_graph(self.path)
        self.num_parameters = onnx_parameter_count(graph)
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(self.path, providers=providers)
        except Exception as exc:
            raise EngineError("invalid_model", f"onnxruntime cannot open the ONNX model: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise EngineError("invalid_model", f"the ONNX model takes {len(inputs)} inputs; one is supported")
        self.input_name = inputs[0].name
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        self.input_dtype = _ORT_DTYPES.get(inputs[0].type)
        output = graph.graph.output[0].type.tensor_type.shape.dim
        self.onnx_num_classes = output[-1].dim_value if output and output[-1].dim_value > 0 else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.format == "hf":
            return self.module(x.to(self.device))
        if self.format == "torchscript":
            try:
                return _as_logits(self.module(x.to(self.device)))
            except RuntimeError as exc:
                if not (self.device.startswith("cuda") and _DEVICE_MISMATCH.search(str(exc))):
                    raise
                # A traced module can hold tensors made on the CPU at trace time (an LSTM's zero state):
                # it runs only where it was traced. Run it there; the student still trains on the GPU.
                logger.warning(
                    "the TorchScript teacher does not run on %s (%s); running it on the CPU",
                    self.device,
                    str(exc).strip().splitlines()[-1][:200],
                )
                self.device = "cpu"
                self._load_torchscript()
                return _as_logits(self.module(x.to(self.device)))
        if self.format == "pt2":
            x = x.to(self.device)
            if self.fixed_batch is None or len(x) == self.fixed_batch:
                return _as_logits(self.module(x))
            return self._in_fixed_batches(x)
        array = x.detach().cpu().numpy()
        if self.input_dtype is not None and array.dtype.kind == np.dtype(self.input_dtype).kind:
            array = array.astype(self.input_dtype)  # e.g. float64 data into a float32 graph
        out = self.session.run(None, {self.input_name: array})[0]
        return _as_logits(torch.from_numpy(np.asarray(out))).to(self.device)

    def _in_fixed_batches(self, x: torch.Tensor) -> torch.Tensor:
        # Static-batch program: run whole chunks of its size, the last one filled up by repeating a row.
        size, parts = self.fixed_batch, []
        assert size is not None  # called only for a static-batch program
        for start in range(0, len(x), size):
            chunk = x[start : start + size]
            n = len(chunk)
            if n < size:
                chunk = torch.cat([chunk, chunk[-1:].expand(size - n, *chunk.shape[1:])])
            parts.append(_as_logits(self.module(chunk))[:n])
        return torch.cat(parts)


def _as_logits(out) -> torch.Tensor:
    # Hugging Face style models return tuples or dicts whose first entry / "logits" holds the logits.
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    if isinstance(out, list | tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EngineError("invalid_model", f"the model must return logits of shape [batch, classes], got {shape}")
    return out.float()


def load_teacher(path: str, device: str = "cpu") -> Teacher:
    """Open a TorchScript, .pt2 or ONNX model file for inference on `device`."""
    return Teacher(path, device)


def inspect_model(path: str) -> dict:
    """Open a teacher/student file (TorchScript, .pt2, ONNX or a Hugging Face folder, by content); describe it."""
    if sniff_format(path) == "hf":
        from worker.engine.hf_inspect import inspect_hf

        return inspect_hf(path)
    teacher = load_teacher(path, "cpu")
    info = {
        "format": teacher.format,
        "num_parameters": teacher.num_parameters,
        "input": None,
        "num_classes": None,
    }
    if teacher.format in ("onnx", "pt2") and teacher.input_shape is not None:
        dtype = np.dtype(teacher.input_dtype).name if teacher.input_dtype else None
        info["input"] = {"shape": teacher.input_shape[1:], "dtype": dtype}
    if teacher.format == "onnx":
        info["num_classes"] = teacher.onnx_num_classes
    elif teacher.format == "pt2" and teacher.input_shape and None not in teacher.input_shape[1:]:
        # Every example dimension is known: one forward pass on zeros names the number of classes.
        try:
            example = torch.zeros([teacher.fixed_batch or 1, *cast(list[int], teacher.input_shape[1:])])  # no None
            info["num_classes"] = int(teacher(example.to(_torch_dtype(teacher.input_dtype))).shape[1])
        except Exception as exc:  # the shape is all we promised; the class count is a bonus
            logger.info("cannot run the .pt2 program on zeros: %s", exc)
    return info


def _torch_dtype(dtype) -> torch.dtype:
    return getattr(torch, np.dtype(dtype).name) if dtype is not None else torch.float32
