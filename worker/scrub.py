"""Messages that cross the trust boundary, made safe to show a user: no server paths, no stacks, bounded.

Libraries put absolute paths in their error messages (onnxruntime does), and a job child is hostile until shown
otherwise: every message that reaches a user from a child, or from a library, goes through `scrub_message`.
"""

from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 1000
# An absolute path of at least two segments (/a/b...), not part of a word or a ratio such as 19/20.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`,;:()\[\]{}<>]+/)+[^\s/'\"`,;:()\[\]{}<>]*")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s\\'\"`,;:()\[\]{}<>]+\\)*[^\s\\'\"`,;:()\[\]{}<>]*")
_TRACEBACK = re.compile(r"Traceback \(most recent call last\):.*", re.DOTALL)
# What allocators and Python say when memory runs out (a cap hit, not the file's fault).
_OUT_OF_MEMORY = re.compile(r"memoryerror|can't allocate memory|cannot allocate memory|bad_alloc|out of memory", re.I)
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def scrub_message(message: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A one-paragraph message with absolute paths replaced by their file name and stack traces cut off."""
    text = str(message)
    if _TRACEBACK.search(text):  # keep what came before the stack, and the stack's last (telling) line
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = _TRACEBACK.sub("", text) + " " + (lines[-1] if lines else "")
    text = _ABSOLUTE_PATH.sub(lambda m: _basename(m.group(0), "/"), text)
    text = _WINDOWS_PATH.sub(lambda m: _basename(m.group(0), "\\"), text)
    text = " ".join(text.split())  # one line: a stack's indentation and newlines go
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _basename(path: str, sep: str) -> str:
    return path.rstrip(sep).rsplit(sep, 1)[-1] or "<path>"


def scrub_error(error: object, default_code: str = "internal") -> dict:
    """{"code", "message"} from an untrusted error object: a well-formed code and a scrubbed message."""
    if not isinstance(error, dict):
        return {"code": default_code, "message": "the job failed without saying why"}
    code = error.get("code")
    code = code if isinstance(code, str) and _CODE.match(code) else default_code
    message = scrub_message(error.get("message") or "no message")
    return {"code": code, "message": message}


def looks_like_out_of_memory(text: str) -> bool:
    """Whether an error text says memory ran out (checked before scrubbing, which may cut the telling end)."""
    return bool(_OUT_OF_MEMORY.search(text))
