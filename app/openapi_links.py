"""OpenAPI links: from each create (and each list) to the operations that take the id it answers with.

A client generator or a stateful fuzzer follows them: schemathesis reaches every GET, DELETE and cancel with the
id of a real row instead of guessed ids that all answer 404 (issue 11, point 12).
"""

from __future__ import annotations

from typing import Any

# source operation, its status -> {link name: (target operation, {parameter: runtime expression})}
JOB_ID = {"job_id": "$response.body#/id"}
FIRST_JOB_ID = {"job_id": "$response.body#/data/0/id"}
JOB_READS = {
    "GetJob": "jobs_get",
    "CancelJob": "jobs_cancel",
    "ListJobEvents": "jobs_events_list",
    "StreamJobEvents": "jobs_events_stream",
    "ListJobArtifacts": "jobs_artifacts_list",
    "GetJobReport": "jobs_report_get",
    "GetJobReportHtml": "jobs_report_html_get",
}


def _upload_links(kind: str, param: str, expression: str) -> dict[str, tuple[str, dict[str, str]]]:
    name = kind.capitalize()[:-1]
    return {
        f"Get{name}": (f"{kind}_get", {param: expression}),
        f"Delete{name}": (f"{kind}_delete", {param: expression}),
    }


LINKS: dict[tuple[str, str], dict[str, tuple[str, dict[str, str]]]] = {
    ("models_create", "201"): _upload_links("models", "model_id", "$response.body#/id"),
    ("models_list", "200"): _upload_links("models", "model_id", "$response.body#/data/0/id"),
    ("datasets_create", "201"): _upload_links("datasets", "dataset_id", "$response.body#/id"),
    ("datasets_list", "200"): _upload_links("datasets", "dataset_id", "$response.body#/data/0/id"),
    ("jobs_create", "201"): {name: (target, JOB_ID) for name, target in JOB_READS.items()},
    ("jobs_list", "200"): {name: (target, FIRST_JOB_ID) for name, target in JOB_READS.items()},
    ("jobs_artifacts_list", "200"): {
        "DownloadArtifact": (
            "jobs_artifacts_get",
            {"job_id": "$request.path.job_id", "name": "$response.body#/data/0/name"},
        )
    },
}


def add_links(document: dict[str, Any]) -> None:
    """Declare LINKS on the responses of the OpenAPI document, for the operations it has."""
    operations = {
        op["operationId"]: op
        for item in document.get("paths", {}).values()
        for op in item.values()
        if "operationId" in op
    }
    for (source, status), links in LINKS.items():
        response = operations.get(source, {}).get("responses", {}).get(status)
        if response is None:
            continue
        response["links"] = {
            name: {"operationId": target, "parameters": dict(parameters)}
            for name, (target, parameters) in links.items()
            if target in operations
        }
