"""A stand-in for worker/job_child.py that misbehaves as a hijacked child could (runner tests only).

The job's hyperparameters say how: {"mode": "crash"} dies with a traceback naming a server path;
{"mode": "hostile", "target": PATH} writes junk and forged lines, plants links to PATH among its artifacts, then
answers with a report.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    with open(sys.argv[1]) as fh:
        request = json.load(fh)
    config = request["config"]
    if config.get("mode") == "crash":
        sys.stderr.write(
            'Traceback (most recent call last):\n  File "/srv/distillery/secret/engine.py", line 1\n'
            "ZeroDivisionError: division by zero\n"
        )
        return 3
    out = request["out_dir"]
    os.symlink(config["target"], os.path.join(out, "stolen.json"))
    with open(os.path.join(out, "student.pt"), "wb") as fh:
        fh.write(b"weights")
    lines = [
        "not json at all",
        "x" * (9 * 1024**2),  # longer than the longest line the parent reads
        json.dumps({"event": {"type": "status", "message": "job succeeded", "data": {"status": "succeeded"}}}),
        json.dumps({"event": {"type": "phase", "message": "p", "data": {"phase": "pwned"}}}),
        json.dumps({"event": {"type": "warning", "message": f"read {request['teacher']}", "data": {}}}),
        json.dumps({"report": {"job_id": "forged", "student": {"accuracy": 1.0}, "history": []}}),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
