"""Open teacher (and uploaded student) files by content: TorchScript archives and ONNX graphs."""

from __future__ import annotations

import logging
import os
import warnings
import zipfile

import numpy as np
import torch

from worker.engine.errors import EngineError

logger = logging.getLogger(__name__)

SUPPORTED = "TorchScript (torch.jit.save) or ONNX"
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
    """Recognise a model file by content: "torchscript" or "onnx"; anything else is refused."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise EngineError("invalid_model", f"cannot read the model file: {exc}") from exc
    if head.startswith(b"PK"):
        return _sniff_zip(path)
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
        names = zipfile.ZipFile(path).namelist()
    except zipfile.BadZipFile as exc:
        raise EngineError("invalid_model", f"corrupt zip archive: {exc}") from exc
    parts = [n.split("/", 1)[1] for n in names if "/" in n]
    if any(p.startswith("code/") for p in parts) and "constants.pkl" in parts:
        return "torchscript"
    if "models/model.json" in parts or any(p.startswith("models/") for p in parts):
        raise EngineError(
            "invalid_model", f"torch.export (.pt2) programs are not accepted yet; upload a {SUPPORTED} model"
        )
    if "data.pkl" in parts:
        raise EngineError(
            "invalid_model",
            "this is a torch.save archive (a pickled module or state_dict), "
            f"which cannot be run without its Python code; export a {SUPPORTED} model, "
            "e.g. torch.jit.save(torch.jit.script(model), 'teacher.pt')",
        )
    raise EngineError("invalid_model", f"unrecognised zip archive; upload a {SUPPORTED} model")


def _onnx_graph(path: str):
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # protobuf raises several types on garbage
        return None
    if not model.graph.node or not model.opset_import or not model.graph.output:
        return None
    return model


class Teacher:
    """A loaded model behind one callable: `teacher(x)` gives float32 logits [N, C] on `device`."""

    def __init__(self, path: str, device: str = "cpu"):
        self.path = path
        self.device = device
        self.format = sniff_format(path)
        self.size_bytes = os.path.getsize(path)
        if self.format == "torchscript":
            self._load_torchscript()
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
        self.input_shape = None  # TorchScript does not record input sizes
        self.input_dtype = None

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        graph = _onnx_graph(self.path)
        self.num_parameters = int(sum(int(np.prod(t.dims)) for t in graph.graph.initializer))
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
        if self.format == "torchscript":
            return _as_logits(self.module(x.to(self.device)))
        array = x.detach().cpu().numpy()
        if self.input_dtype is not None and array.dtype.kind == np.dtype(self.input_dtype).kind:
            array = array.astype(self.input_dtype)  # e.g. float64 data into a float32 graph
        out = self.session.run(None, {self.input_name: array})[0]
        return _as_logits(torch.from_numpy(np.asarray(out))).to(self.device)


def _as_logits(out) -> torch.Tensor:
    # Hugging Face style models return tuples or dicts whose first entry / "logits" holds the logits.
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    if isinstance(out, list | tuple):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EngineError(
            "invalid_model", f"the model must return logits of shape [batch, classes], got {shape}"
        )
    return out.float()


def load_teacher(path: str, device: str = "cpu") -> Teacher:
    """Open a TorchScript or ONNX model file for inference on `device`."""
    return Teacher(path, device)


def inspect_model(path: str) -> dict:
    """Open a teacher/student file (TorchScript or ONNX, recognised by content) and describe it."""
    teacher = load_teacher(path, "cpu")
    info = {
        "format": teacher.format,
        "num_parameters": teacher.num_parameters,
        "input": None,
        "num_classes": None,
    }
    if teacher.format == "onnx":
        dtype = np.dtype(teacher.input_dtype).name if teacher.input_dtype else None
        info["input"] = {"shape": teacher.input_shape[1:], "dtype": dtype}
        info["num_classes"] = teacher.onnx_num_classes
    return info
