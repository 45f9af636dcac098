"""One service URL and one API key over httpx: the plumbing every resource method of the client uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from distillery_client.exceptions import DistilleryError, raise_for_response

DEFAULT_URL = "http://127.0.0.1:8000"


def default_key() -> str | None:
    """DISTILLERY_API_KEY, else the key `distillery up` keeps in the data folder (.distillery/api_key)."""
    key = os.environ.get("DISTILLERY_API_KEY")
    if key:
        return key.strip()
    # `distillery up` keeps its key here; handy on the machine that runs the service.
    data_dir = Path(os.environ.get("DISTILLERY_DATA_DIR", ".distillery"))
    try:
        return (data_dir / "api_key").read_text().strip() or None
    except OSError:
        return None


class Connection:
    """A client for one service URL and one API key.

    `url` defaults to DISTILLERY_URL (else http://127.0.0.1:8000), `api_key` to DISTILLERY_API_KEY (else
    the key `distillery up` wrote in .distillery/api_key). `transport` goes to httpx (tests inject faults).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = (url or os.environ.get("DISTILLERY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or default_key()
        headers = {"User-Agent": "distillery-client/1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._access_checked = False

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_access(self) -> None:
        """One cheap authenticated GET: raises DistilleryError (401 with the API's message, or status 0 when the
        service cannot be reached) so that a wrong key or URL is known before a large upload is streamed."""
        self._request("GET", "/v1/models", params={"limit": 1})
        self._access_checked = True

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DistilleryError(0, "connection_error", f"cannot reach {self.url}: {exc}") from exc
        raise_for_response(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def _page(self, path: str, **params: Any) -> list[dict]:
        """One page of a list route (`data`), the None parameters left out."""
        return self._json("GET", path, params={k: v for k, v in params.items() if v is not None})["data"]
