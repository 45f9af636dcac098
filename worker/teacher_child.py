"""Sandboxed child: load a teacher and write its logits for named input arrays (see worker/sandbox.py).

`python -m worker.teacher_child REQUEST_JSON`, where the request is
{"teacher": path, "inputs": {name: .npy path}, "out_dir": path, "device": "cpu" | "cuda"}.
Writes `logits-<name>.npy` (float32 [N, C]) into out_dir and prints, as the last line of stdout,
{"outputs": {name: path}, "info": {...}} or {"error": {"code", "message"}}.
Runs with only out_dir visible: the teacher's code cannot reach anything else.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with open(sys.argv[1]) as fh:
        request = json.load(fh)
    import numpy as np
    import torch

    from worker.engine import EngineError
    from worker.engine.report import latencies
    from worker.engine.teacher_outputs import check_teacher, compute_teacher_outputs
    from worker.engine.teachers import load_teacher

    out_dir = request["out_dir"]
    try:
        device = request.get("device", "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        from worker.onnx_check import external_data_problem

        problem = external_data_problem(request["teacher"])
        if problem:
            raise EngineError(problem["code"], problem["message"])
        teacher = load_teacher(request["teacher"], device)
        outputs, num_classes, example = {}, None, None
        for name, path in request["inputs"].items():
            x = np.load(path, mmap_mode="r", allow_pickle=False)
            x = np.ascontiguousarray(x)
            _first_rows(teacher, x)
            width = check_teacher(teacher, x, None)
            if num_classes is not None and width != num_classes:
                raise EngineError(
                    "invalid_model",
                    f"the teacher returned {width} classes for {name} but {num_classes} before",
                )
            num_classes = width
            logits = compute_teacher_outputs(teacher, x).numpy().astype(np.float32, copy=False)
            if logits.shape != (len(x), width):
                raise EngineError(
                    "invalid_model",
                    f"the teacher returned logits of shape {list(logits.shape)} for {len(x)} examples",
                )
            if not np.isfinite(logits).all():
                raise EngineError("invalid_model", f"the teacher returned NaN or infinite logits on {name}")
            dest = os.path.join(out_dir, f"logits-{name}.npy")
            np.save(dest, logits, allow_pickle=False)
            outputs[name] = dest
            if example is None and len(x):
                example = torch.from_numpy(x[:1])
        cpu_teacher = teacher if teacher.device == "cpu" else load_teacher(request["teacher"], "cpu")
        info = {
            "format": teacher.format,
            "num_parameters": int(teacher.num_parameters),
            "size_bytes": int(teacher.size_bytes),
            "num_classes": num_classes,
            "input_shape": teacher.input_shape,
            "input_dtype": None if teacher.input_dtype is None else np.dtype(teacher.input_dtype).name,
            "latency_ms": latencies(cpu_teacher, example) if example is not None else None,
        }
        answer = {"outputs": outputs, "info": info}
    except EngineError as exc:
        answer = {"error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        answer = {"error": {"code": "sandbox_memory_limit", "message": "MemoryError: out of memory"}}
    except Exception as exc:  # the teacher's own failure: report it as the file's fault
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        answer = {
            "error": {
                "code": "teacher_failed",
                "message": f"the teacher failed: {type(exc).__name__}: {first[:500]}",
            }
        }
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    return 0


def _first_rows(teacher, x) -> None:
    """Run the teacher on two rows; a failure is reported with the TorchScript error's last, telling line."""
    import numpy as np
    import torch

    from worker.engine import EngineError

    try:
        teacher(torch.from_numpy(x[: min(2, len(x))]))
    except EngineError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        telling = lines[-1] if lines else type(exc).__name__
        declared, misfit = "", False
        if teacher.input_shape is not None and teacher.input_dtype is not None:
            want, dtype = teacher.input_shape[1:], np.dtype(teacher.input_dtype)
            declared = f" (the teacher expects {want} of {dtype.name})"
            misfit = (
                len(want) != x.ndim - 1
                or x.dtype.kind != dtype.kind
                or any(w is not None and w != a for w, a in zip(want, x.shape[1:], strict=False))
            )
        if misfit or _SHAPE_PROBLEM.search(telling):  # the data does not fit the teacher: the user's to fix
            raise EngineError(
                "input_mismatch",
                f"the teacher cannot take this data: examples of shape {list(x.shape[1:])} and dtype "
                f"{x.dtype}{declared}; teacher error: {telling[:500]}",
            ) from exc
        raise EngineError(
            "teacher_failed",
            f"the teacher failed on examples of shape {list(x.shape[1:])} {x.dtype}: {telling[:500]}",
        ) from exc


# Errors that say the examples' shape or dtype does not fit the teacher (rather than the teacher breaking).
_SHAPE_PROBLEM = re.compile(
    r"shape|size mismatch|dimension|must match the size|size of tensor|mat1 and mat2|expected scalar type"
    r"|dtype|expected .*input|input .* expected",
    re.IGNORECASE,
)


if __name__ == "__main__":
    sys.exit(main())
