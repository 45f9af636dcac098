"""Text end to end over HTTP with a real worker: TorchScript LSTM teacher + tokenizer.json + CSV text with
string labels -> an LSTM student at least 5x smaller, within 95% of the teacher's accuracy, agreeing with
the teacher more often than the same student trained without it; every number checked from the files."""

from __future__ import annotations

import csv
import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from contract import DEFAULT_TEXT_STUDENT
from tests.support.service import Client, running_service
from tests.support.text import text_fixture

pytestmark = pytest.mark.integration

STUDENT = {"architecture": "lstm", "embedding_dim": 32, "hidden_dim": 32}
JOB_TIMEOUT_S = 120


def tokenise(csv_path, tokenizer_path, max_length: int) -> tuple[np.ndarray, list[str]]:
    """Token ids [N, max_length] right-padded with the tokenizer's pad id, and the string labels.

    Written against the `tokenizers` library directly, as a user would, not with the engine's reader.
    """
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    pad_id = tok.padding["pad_id"] if tok.padding else 0
    tok.no_padding()
    tok.enable_truncation(max_length)
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    x = np.full((len(rows), max_length), pad_id, dtype=np.int64)
    for i, enc in enumerate(tok.encode_batch([r["text"] for r in rows])):
        x[i, : len(enc.ids)] = enc.ids
    return x, [r["label"] for r in rows]


def predict(path, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i : i + 256])) for i in range(0, len(x), 256)]).argmax(1).numpy()


def download(client: Client, job_id: str, name: str, arts: dict, out) -> bytes:
    resp = client.http.get(f"/v1/jobs/{job_id}/artifacts/{name}")
    assert resp.status_code == 200, resp.text
    assert hashlib.sha256(resp.content).hexdigest() == arts[name]["sha256"]
    (out / name).write_bytes(resp.content)
    return resp.content


def test_lstm_teacher_distils_into_a_smaller_lstm_over_http(tmp_path):
    fx = text_fixture()
    fields = {
        "tokenizer": fx["tokenizer"],
        "text_column": "text",
        "label_column": "label",
        "max_length": fx["max_length"],
    }
    # One thread per process: small LSTM steps on a shared 2-core machine are far faster that way.
    with running_service(tmp_path, extra_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as svc:
        client = Client(svc.url, svc.new_key("acme"))
        teacher = client.ready_upload("models", fx["teacher"])
        assert teacher["format"] == "torchscript"
        train = client.ready_upload("datasets", fx["train"], **fields)
        evaluation = client.ready_upload("datasets", fx["eval"], **fields)
        assert train["info"]["classes"] == sorted(fx["classes"])
        assert train["info"]["input"] == {"shape": [fx["max_length"]], "dtype": "int64"}
        body = {
            "teacher_id": teacher["id"],
            "train_dataset_id": train["id"],
            "eval_dataset_id": evaluation["id"],
            "student": STUDENT,
            "hyperparameters": {"epochs": 10, "batch_size": 64, "learning_rate": 0.01},
            "export": ["torchscript", "safetensors"],
            "baseline": True,
        }
        # A job that names no student gets one that reads token ids (was: an MLP that failed at run time).
        unnamed = {k: v for k, v in body.items() if k not in ("student", "eval_dataset_id", "baseline")}
        unnamed["hyperparameters"] = {"epochs": 1, "recipe": "plain"}
        resp = client.http.post("/v1/jobs", json=unnamed)
        assert resp.status_code == 201, resp.text
        assert resp.json()["student"] == DEFAULT_TEXT_STUDENT
        default_job = client.wait_job(resp.json()["id"], timeout=JOB_TIMEOUT_S)
        assert default_job["status"] == "succeeded", (default_job, svc.log_tail())
        resp = client.http.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        job = client.wait_job(resp.json()["id"], timeout=JOB_TIMEOUT_S)
        assert job["status"] == "succeeded", (job, svc.log_tail())
        report = client.http.get(f"/v1/jobs/{job['id']}/report").json()
        arts = {a["name"]: a for a in client.http.get(f"/v1/jobs/{job['id']}/artifacts").json()["data"]}
        for name in ("student.pt", "manifest.json", "tokenizer.json"):
            download(client, job["id"], name, arts, tmp_path)

    assert {
        "student.pt",
        "student.safetensors",
        "student.json",
        "manifest.json",
        "report.json",
        "tokenizer.json",
    } <= set(arts)
    assert (tmp_path / "tokenizer.json").read_bytes() == fx["tokenizer"].read_bytes()

    # Classes: string labels in sorted order, named the same in the report and the manifest.
    classes = sorted(fx["classes"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert report["classes"] == classes and manifest["classes"] == classes
    assert manifest["tokenizer"] == "tokenizer.json" and manifest["pad_id"] == 0
    assert manifest["input"] == {"shape": [fx["max_length"]], "dtype": "int64"}

    # At least 5 times smaller: in parameters and in file size.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student_params = sum(p.numel() for p in torch.jit.load(str(tmp_path / "student.pt")).parameters())
    assert student_params == report["student"]["num_parameters"]
    assert report["teacher"]["num_parameters"] == fx["teacher_info"]["num_parameters"]
    assert report["teacher"]["num_parameters"] >= 5 * student_params
    assert fx["teacher"].stat().st_size >= 5 * arts["student.pt"]["size_bytes"]

    # Accuracy and agreement measured here, with the downloaded file, on eval.csv tokenised by us.
    x, labels = tokenise(fx["eval"], fx["tokenizer"], fx["max_length"])
    y = np.array([classes.index(label) for label in labels])
    student_pred, teacher_pred = predict(tmp_path / "student.pt", x), predict(fx["teacher"], x)
    student_acc, teacher_acc = float(np.mean(student_pred == y)), float(np.mean(teacher_pred == y))
    assert report["eval_examples"] == len(y)
    assert student_acc == pytest.approx(report["student"]["accuracy"], abs=1e-9)
    assert teacher_acc == pytest.approx(report["teacher"]["accuracy"], abs=1e-9)
    assert float(np.mean(student_pred == teacher_pred)) == pytest.approx(report["student"]["agreement"], abs=1e-9)
    assert student_acc >= 0.95 * teacher_acc, report

    # Distillation helped: the same student trained without the teacher agrees with it less often.
    assert report["baseline"] is not None
    assert report["baseline"]["agreement"] < report["student"]["agreement"], report
