"""Hugging Face model folders as uploads (issue 12, point 1): recognised by content, described, refused safely.

Every folder is built here from a config (nothing is downloaded). The engine-level tests call the validation
entry point directly; the service test goes through HTTP, the API's name checks and the sandboxed validation child.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import hf_folders as hf
from tests.support.service import Client, running_service
from worker.engine import inspect_model
from worker.engine.errors import EngineError


def test_a_bert_classifier_zip_is_described(tmp_path):
    folder, parameters = hf.bert_classifier(tmp_path / "bert")
    info = inspect_model(str(hf.zip_folder(folder, tmp_path / "bert.zip")))
    assert info["format"] == "hf" and info["model_type"] == "bert"
    assert info["task"] == "sequence_classification" and info["architecture"] == "BertForSequenceClassification"
    assert info["num_parameters"] == parameters
    assert info["labels"] == ["neg", "pos", "neutral"] and info["num_classes"] == 3
    assert info["vocab_size"] == 64 and info["tokenizer"] is True and info["max_length"] == 64
    assert info["chat_template"] is False


def test_a_gpt2_tar_with_files_at_the_top_is_described(tmp_path):
    folder, parameters = hf.gpt2_lm(tmp_path / "gpt")
    info = inspect_model(str(hf.tar_folder(folder, tmp_path / "gpt.tar")))
    assert info["task"] == "causal_lm" and info["architecture"] == "GPT2LMHeadModel"
    assert info["num_parameters"] == parameters  # tied embeddings counted once, as the weights store them
    assert info["chat_template"] is True and info["labels"] is None


REFUSED = {
    "pickle weights": (lambda d: hf.pickle_only(d, d.parent / "canary"), "pickle"),
    "custom code": (hf.with_remote_code, "code"),
    "auto_map": (lambda d: hf.with_config(d, auto_map={"AutoModel": "x.Y"}), "auto_map"),
    "unknown model_type": (lambda d: hf.with_config(d, model_type="bertish"), "model_type 'bertish'"),
    "10^12 parameters": (
        lambda d: hf.with_config(
            d, hidden_size=65536, num_hidden_layers=20, num_attention_heads=64, intermediate_size=262144
        ),
        "1,030,796,345,344 parameters",
    ),
    "weights unlike the config": (lambda d: hf.with_config(d, num_hidden_layers=12), "config.json describes"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsafe_or_impossible_folders_are_refused_naming_why(case, tmp_path):
    make, words = REFUSED[case]
    archive = hf.zip_folder(make(tmp_path / "folder"), tmp_path / "m.zip")
    with pytest.raises(EngineError) as caught:
        inspect_model(str(archive))
    assert caught.value.code == "invalid_model" and words in caught.value.message, caught.value.message
    assert hf.CANARY not in caught.value.message
    assert not (tmp_path / "canary").exists()


@pytest.mark.slow
def test_hf_uploads_through_the_service(tmp_path):
    """Name-level refusals answer 422 at once; content-level ones end `invalid` with the reason; a job whose data
    does not fit its hf teacher is refused; the canary pickle is never loaded anywhere."""
    with running_service(tmp_path / "svc") as svc:
        client = Client(svc.url, svc.new_key("alice"))
        folder, parameters = hf.bert_classifier(tmp_path / "bert")
        ready = client.ready_upload("models", hf.zip_folder(folder, tmp_path / "bert.zip"))
        assert ready["format"] == "hf" and ready["info"]["num_parameters"] == parameters
        gpt, _ = hf.gpt2_lm(tmp_path / "gpt")
        assert client.ready_upload("models", hf.tar_folder(gpt, tmp_path / "gpt.tar"))["info"]["task"] == "causal_lm"

        canary_file = tmp_path / "canary"
        for make, words in ((lambda d: hf.pickle_only(d, canary_file), "pickle"), (hf.with_remote_code, "code")):
            resp = client.upload("models", hf.zip_folder(make(tmp_path / f"f{len(words)}"), tmp_path / f"{words}.zip"))
            assert resp.status_code == 422, resp.text
            assert words in resp.json()["error"]["message"] and hf.CANARY not in resp.text
        for name, changes, words in (
            ("type", {"model_type": "bertish"}, "model_type 'bertish'"),
            ("huge", {"hidden_size": 65536, "num_hidden_layers": 20, "num_attention_heads": 64}, "parameters"),
        ):
            archive = hf.zip_folder(hf.with_config(tmp_path / name, **changes), tmp_path / f"{name}.zip")
            resp = client.upload("models", archive)
            assert resp.status_code == 201, resp.text
            body = client.wait_upload("models", resp.json()["id"])
            assert body["status"] == "invalid" and words in body["error"]["message"], body
        assert not canary_file.exists()
        assert hf.CANARY not in svc.log_tail(200_000)

        _distil_a_bert_teacher_over_http(client, tmp_path)
        lm = client.ready_upload("models", hf.tar_folder(gpt, tmp_path / "gpt-again.tar"))
        floats = tmp_path / "floats.npz"
        np.savez(floats, x=np.zeros((20, 8), np.float32), y=np.zeros(20, np.int64))
        train = client.ready_upload("datasets", floats)
        for teacher, code in ((lm, "input_mismatch"), (ready, "input_mismatch")):  # an LM needs prompts
            resp = client.http.post("/v1/jobs", json={"teacher_id": teacher["id"], "train_dataset_id": train["id"]})
            assert resp.status_code == 422 and resp.json()["error"]["code"] == code, resp.text


def _distil_a_bert_teacher_over_http(client: Client, tmp_path) -> None:
    """Upload to download: a BERT teacher trained on real text, the text tokenised with its own tokenizer.json."""
    from tests.support.real_text import make_real_text_fixture

    files = make_real_text_fixture(tmp_path / "text")  # the corpus and its tokenizer (no LSTM teacher)
    archive, accuracy, _ = hf.train_bert_teacher(files, tmp_path, epochs=4)
    teacher = client.ready_upload("models", archive)
    fields = {"tokenizer": files["tokenizer"], "max_length": 32}
    train = client.ready_upload("datasets", files["train"], **fields)
    eval_ = client.ready_upload("datasets", files["eval"], **fields)
    body = {
        "teacher_id": teacher["id"],
        "train_dataset_id": train["id"],
        "eval_dataset_id": eval_["id"],
        "student": {"architecture": "lstm", "embedding_dim": 16, "hidden_dim": 16},
        "hyperparameters": {"epochs": 2, "recipe": "plain"},
    }
    resp = client.http.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = client.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", job
    report = client.http.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["teacher"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["teacher"]["latency"]["runtime"] == "transformers (eager)"
    student = client.http.get(f"/v1/jobs/{job['id']}/artifacts/student.pt")
    assert student.status_code == 200 and len(student.content) > 1000
    # The same text uploaded without a tokenizer, tokenised at job time by the teacher's own: the same teacher score.
    untokenised = client.ready_upload("datasets", files["eval"], tokenizer_from="teacher", max_length=32)
    assert untokenised["info"]["input"]["dtype"] == "text" and untokenised["info"]["tokenizer_from"] == "teacher"
    # ... into a student of the teacher's own family, downloaded as a folder that transformers loads alone.
    hf_student = {"architecture": "hf", "num_hidden_layers": 1}
    resp = client.http.post("/v1/jobs", json={**body, "eval_dataset_id": untokenised["id"], "student": hf_student})
    assert resp.status_code == 201, resp.text
    again = client.wait_job(resp.json()["id"])
    assert again["status"] == "succeeded", again
    report = client.http.get(f"/v1/jobs/{again['id']}/report").json()
    assert report["teacher"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    _load_the_downloaded_hf_student(client, again["id"], tmp_path / "downloaded", report)
    from distillery_client import Distillery

    sdk = Distillery(str(client.http.base_url), api_key=client.http.headers["Authorization"].split()[1])
    via_sdk = sdk.wait_ready(sdk.upload_dataset(files["train"], tokenizer_from="teacher", max_length=32))[0]
    assert via_sdk.info["input"]["dtype"] == "text"
    both = client.upload("datasets", files["eval"], tokenizer=files["tokenizer"], tokenizer_from="teacher")
    assert both.status_code == 422 and "not both" in both.text
    # An uploaded Hugging Face student must share the teacher's tokenizer: a vocabulary of another size is refused.
    other, _ = hf.bert_classifier(tmp_path / "other-vocab", vocab=32)
    uploaded = client.ready_upload("models", hf.zip_folder(other, tmp_path / "other-vocab.zip"))
    resp = client.http.post("/v1/jobs", json={**body, "student": {"model_id": uploaded["id"]}})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_student", resp.text
    assert "vocabulary (32 ids) differs from the teacher's" in resp.json()["error"]["message"]


def _load_the_downloaded_hf_student(client: Client, job_id: str, out, report: dict) -> None:
    import io
    import zipfile

    from transformers import AutoModelForSequenceClassification

    resp = client.http.get(f"/v1/jobs/{job_id}/artifacts/student_hf.zip")
    assert resp.status_code == 200, resp.text
    zipfile.ZipFile(io.BytesIO(resp.content)).extractall(out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 1
    assert sum(p.numel() for p in model.parameters()) == report["student"]["num_parameters"]
    assert (out / "tokenizer.json").exists()
