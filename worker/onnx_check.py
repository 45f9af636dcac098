"""Refuse ONNX files that reference tensor data outside themselves (external data files)."""

from __future__ import annotations

ONNX_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL


def external_data_problem(path: str) -> dict | None:
    """{"code", "message"} when the ONNX file points at external data, else None (also for non-ONNX files)."""
    with open(path, "rb") as fh:
        if fh.read(1) != b"\x08":  # not an ONNX ModelProto (its first field is ir_version)
            return None
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # not parseable: the regular reader reports it
        return None
    for tensor in _get_all_tensors(model):
        if tensor.data_location == ONNX_EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            return {
                "code": "invalid_model",
                "message": f"the ONNX file keeps tensor {tensor.name!r} in an external file ({location!r}); "
                "external data could name any file on the server, so only self-contained ONNX "
                "files are accepted: save with onnx.save(model, path, save_as_external_data=False)"
                " (models up to 2 GB)",
            }
    return None
