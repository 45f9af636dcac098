"""Causal-LM distillation over HTTP with a real worker (issue 12, "end to end"): a Llama teacher trained here on
real text (tests/support/lm_text.py) and JSONL prompts uploaded, a forward-KL job run, the student downloaded
and loaded by transformers alone; the API's refusals for inputs that do not fit each other."""

from __future__ import annotations

import dataclasses
import io
import json
import time
import zipfile

import numpy as np
import pytest

from contract.wire import LMOptions
from tests.support import hf_folders as hf
from tests.support.lm_text import lm_fixture
from tests.support.service import Client, running_service
from worker.engine import inspect_dataset
from worker.engine.config import DatasetSpec
from worker.engine.errors import EngineError
from worker.engine.lm_distill import LMConfig
from worker.engine.lm_inspect import is_prompts
from worker.engine.lm_train import LMTrainSettings


def test_the_api_settings_mirror_the_engine_defaults():
    options = LMOptions()
    engine = {**dataclasses.asdict(LMConfig()), **dataclasses.asdict(LMTrainSettings())}
    for name in LMOptions.model_fields:
        assert getattr(options, name) == engine[name], name


def _rows(path, rows: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prompts_are_described_and_bad_rows_refused(tmp_path):
    rows = [{"prompt": "a b", "completion": "c"}, {"prompt": "d"}, {"messages": [{"role": "user", "content": "x"}]}]
    info = inspect_dataset(DatasetSpec(path=str(_rows(tmp_path / "p.jsonl", rows)), format="jsonl"))
    assert info["kind"] == "prompts" and info["rows"] == 3 and info["with_completion"] == 1
    assert info["has_completions"] and info["has_messages"] and not info["has_labels"]
    # A classification table with a text column named "prompt" and a label stays a table.
    labelled = _rows(tmp_path / "l.jsonl", [{"prompt": "good", "label": 1}, {"prompt": "bad", "label": 0}])
    assert not is_prompts(DatasetSpec(path=str(labelled), format="jsonl"))
    with pytest.raises(EngineError, match="text column 'text' not found"):  # the table reader's own words
        inspect_dataset(DatasetSpec(path=str(labelled), format="jsonl"))
    bad = _rows(tmp_path / "b.jsonl", [{"prompt": "a"}, {"prompt": 3}])
    with pytest.raises(EngineError, match="row 2"):
        inspect_dataset(DatasetSpec(path=str(bad), format="jsonl"))


@pytest.mark.slow
def test_a_causal_lm_is_distilled_over_http(tmp_path):
    files = lm_fixture()
    lines = files["train"].read_text(encoding="utf-8").splitlines()
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines[:160]) + "\n", encoding="utf-8")
    eval_ = tmp_path / "eval.jsonl"
    eval_.write_text("\n".join(files["eval"].read_text(encoding="utf-8").splitlines()[:40]) + "\n", encoding="utf-8")
    # Every progress event recorded as an event: this job's epochs can end closer together than the recorder's
    # usual throttle (0.2 s here), which folds such a progress into the next metrics event instead.
    with running_service(tmp_path / "svc", extra_env={"DISTILLERY_PROGRESS_INTERVAL_S": "0"}) as svc:
        client = Client(svc.url, svc.new_key("alice"))
        teacher = client.ready_upload("models", files["teacher"])
        assert teacher["info"]["task"] == "causal_lm"
        train_up = client.ready_upload("datasets", train)
        assert train_up["info"]["kind"] == "prompts" and train_up["info"]["rows"] == 160
        eval_up = client.ready_upload("datasets", eval_)
        lm = {"method": "forward_kl", "epochs": 2, "batch_size": 32, "max_length": 48, "max_new_tokens": 8}
        body = {
            "teacher_id": teacher["id"],
            "train_dataset_id": train_up["id"],
            "eval_dataset_id": eval_up["id"],
            "student": {"architecture": "hf", "num_hidden_layers": 2},
            "lm": {**lm, "generation_prompts": 4, "speed": False},
        }
        _refusals(client, tmp_path, body, files)
        resp = client.http.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        job = client.wait_job(resp.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["hyperparameters"]["lm"]["method"] == "forward_kl"
        report = client.http.get(f"/v1/jobs/{job['id']}/report")
        assert report.status_code == 200, report.text
        report = report.json()
        print("perplexity: teacher", report["teacher"]["perplexity"], "student", report["student"]["perplexity"],
              "baseline", report["baseline"]["perplexity"])  # fmt: skip
        assert report["task"] == "causal_lm" and report["eval_examples"] == 40
        assert report["student"]["perplexity"] > 1 and report["baseline"]["perplexity"] > 1
        assert report["teacher_signal"]["forward_passes"] > 0
        page = client.http.get(f"/v1/jobs/{job['id']}/report.html")
        assert page.status_code == 200 and "perplexity" in page.text.lower()
        assert "Preflight" in page.text and "estimate" in page.text and "per epoch" in page.text
        _progress_and_metrics(client, job, report)
        _generate_with_the_download(client, job["id"], tmp_path / "student", report)
        _cancel_a_long_job(svc, client, {**body, "lm": {**body["lm"], "epochs": 500}})


def _progress_and_metrics(client: Client, job: dict, report: dict) -> None:
    """Per-epoch progress of both models, after the preflight and the estimate; Job.metrics carry perplexities."""
    events = client.http.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]
    told = [e for e in events if e["type"] in ("info", "progress")]
    keys = [next(iter(e["data"] or {}), None) for e in told]
    assert keys.index("preflight") < keys.index("estimate") < [e["type"] for e in told].index("progress"), keys
    epochs = {(e["data"]["model"], e["data"]["epoch"]) for e in events if e["type"] == "progress"}
    assert epochs == {(m, n) for m in ("baseline", "student") for n in (1, 2)}, epochs
    assert all(e["data"]["validation_nll"] > 0 for e in events if e["type"] == "progress")
    estimate = report["preflight"]["estimate"]
    print("estimate", estimate)
    assert estimate["signal_bytes"] > 0 and estimate["actual"]["teacher_seconds"] > 0
    metrics = job["metrics"]
    assert metrics["validation_accuracy"] is None  # an LM job has no accuracy, and none is made up
    for name in ("teacher", "student", "baseline"):
        assert metrics[f"{name}_perplexity"] == pytest.approx(report[name]["perplexity"]), metrics
    assert metrics["gap_recovered"] == pytest.approx(report["gap_recovered"]["value"])
    assert metrics["validation_nll"] == pytest.approx(report["lm_history"]["student"][-1]["validation_nll"])


def _cancel_a_long_job(svc, client: Client, body: dict) -> None:
    """A cancelled LM job's child stops at once (it answers `stopped`), not after the 300 s stuck grace."""
    resp = client.http.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the child is training
        events = client.http.get(f"/v1/jobs/{job_id}/events").json()["data"]
        if any(e["type"] == "phase" and e["data"].get("phase") == "training" for e in events):
            break
        time.sleep(0.3)
    assert client.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert client.wait_job(job_id, timeout=60)["status"] == "cancelled"  # the API's word, at once
    deadline = time.monotonic() + 60  # the worker's: its child has ended (500 epochs take far longer)
    while f"job {job_id} stopped: cancelled" not in svc.log_tail(200_000) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"job {job_id} stopped: cancelled" in svc.log_tail(200_000)
    events = client.http.get(f"/v1/jobs/{job_id}/events").json()["data"]
    assert not [e for e in events if (e.get("data") or {}).get("reason") == "stuck"], events


def _refusals(client: Client, tmp_path, body: dict, files: dict) -> None:
    """Inputs that do not fit: each refused at submit, with a message naming what to change."""

    def refused(changes: dict, code: str, words: str) -> None:
        resp = client.http.post("/v1/jobs", json={**body, **changes})
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == code and words in error["message"], error

    other = client.ready_upload("models", files["other_student"])
    refused({"student": {"model_id": other["id"]}}, "invalid_student", "seq_kd")
    bert, _ = hf.bert_classifier(tmp_path / "bert")
    classifier = client.ready_upload("models", hf.zip_folder(bert, tmp_path / "bert.zip"))
    refused({"teacher_id": classifier["id"], "lm": None, "student": {"architecture": "hf"}}, "input_mismatch",
            "causal-LM teacher")  # fmt: skip
    table = tmp_path / "floats.npz"
    np.savez(table, x=np.zeros((20, 8), np.float32), y=np.zeros(20, np.int64))
    labelled = client.ready_upload("datasets", table)
    refused({"train_dataset_id": labelled["id"]}, "input_mismatch", "distils on prompts")
    refused({"teacher_id": classifier["id"], "train_dataset_id": labelled["id"], "eval_dataset_id": None},
            "invalid_config", "`lm` settings are for causal language model teachers")  # fmt: skip
    refused({"eval_dataset_id": None}, "input_mismatch", "eval_dataset_id")


def _generate_with_the_download(client: Client, job_id: str, out, report: dict) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resp = client.http.get(f"/v1/jobs/{job_id}/artifacts/student_hf.zip")
    assert resp.status_code == 200, resp.text
    zipfile.ZipFile(io.BytesIO(resp.content)).extractall(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) == report["student"]["num_parameters"]
    ids = tokenizer("the function returns", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 5 or int(generated[0, -1]) == tokenizer.eos_token_id


def test_an_lm_report_reads_as_every_job_report():
    """The engine's LM report, given the keys every report has, passes the API's model and the CLI's table."""
    from rich.console import Console

    from contract.wire import Report
    from distillery_cli.tables import report_table
    from worker.job_lm import as_job_report

    engine = {
        "task": "causal_lm",
        "method": "forward_kl",
        "teacher": {"num_parameters": 400, "nll": 2.0, "perplexity": 7.39},
        "student": {"num_parameters": 200, "nll": 2.5, "perplexity": 12.18, "top1_agreement": 0.5},
        "baseline": {"num_parameters": 200, "nll": 2.7, "perplexity": 14.88, "top1_agreement": 0.4},
        "exports": {"hf": "student_hf.zip"},
    }
    report = Report.model_validate({**as_job_report(engine, "cpu", 1.5, 40), "job_id": "job_x"})
    assert report.compression_ratio == 2.0 and report.eval_examples == 40 and report.history == []
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(report_table(report.model_dump()))
    assert "perplexity" in buffer.getvalue() and "12.18" in buffer.getvalue()
