"""Connecting to Label Studio: the SDK client and a thin HTTP client for the few endpoints
where the SDK's typed objects are too slow (listing thousands of tasks) or too narrow
(data-manager filters).

Where the connection comes from: LABEL_STUDIO_URL + LABEL_STUDIO_API_KEY in the environment
(a team server), else the workspace's local server (`<home>/labelstudio/credentials.json`).
The API key is never logged or put into exception messages.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx

from annotation.server import ServerError, ServerPaths, load_credentials, status
from warehouse.workspace import Workspace


class LabelStudioError(RuntimeError):
    pass


@dataclass(frozen=True)
class Connection:
    base_url: str
    api_key: str

    def __repr__(self) -> str:  # keep the key out of logs and tracebacks
        return f"Connection(base_url={self.base_url!r}, api_key=***)"


def connection(ws: Workspace) -> Connection:
    """The Label Studio to talk to (does not start anything; see annotation.server.ensure_server)."""
    url, key = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
    if url:
        if not key:
            raise LabelStudioError("LABEL_STUDIO_URL is set but LABEL_STUDIO_API_KEY is not")
        return Connection(url.rstrip("/"), key)
    paths = ServerPaths.for_workspace(ws)
    creds = load_credentials(paths)
    st = status(paths)
    if creds is None or not st["running"]:
        raise LabelStudioError(f"no Label Studio is running for workspace {ws.home}; start one with "
                               "`sfr labelstudio up` or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    return Connection(st["base_url"], creds["api_key"])


def sdk_client(conn: Connection, timeout_s: float = 120.0):
    """A label_studio_sdk 2.x client (JWT keys are exchanged by the SDK itself)."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=conn.base_url, api_key=conn.api_key, timeout=timeout_s)


def _is_jwt(key: str) -> bool:
    return key.count(".") == 2


class LSHttp:
    """Minimal JSON client over httpx with the token header, retries on connection errors
    and error messages that never contain the key."""

    def __init__(self, conn: Connection, timeout_s: float = 120.0, retries: int = 3):
        self.conn = conn
        self.retries = retries
        self.last_date: str | None = None
        # Plain-http servers need no TLS context (loading the CA bundle costs ~0.1 s per client).
        self._http = httpx.Client(base_url=conn.base_url, timeout=timeout_s,
                                  verify=not conn.base_url.startswith("http://"))
        if _is_jwt(conn.api_key):
            r = self._http.post("/api/token/refresh/", json={"refresh": conn.api_key})
            if r.status_code != 200:
                raise LabelStudioError(f"{conn.base_url} refused the personal access token "
                                       f"(HTTP {r.status_code})")
            self._http.headers["Authorization"] = f"Bearer {r.json()['access']}"
        else:
            self._http.headers["Authorization"] = f"Token {conn.api_key}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LSHttp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, **kw) -> Any:
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                r = self._http.request(method, path, **kw)
            except httpx.TransportError as e:
                # A request that never reached the server is safe to repeat; a POST that may have
                # been processed is not (an import would duplicate tasks): the caller reconciles.
                if not isinstance(e, httpx.ConnectError) and method not in ("GET", "HEAD"):
                    raise LabelStudioError(f"{method} {path}: no answer from {self.conn.base_url} "
                                           f"({type(e).__name__}); it may or may not have been applied") from None
                last = e
                time.sleep(0.5 * (attempt + 1))
                continue
            self.last_date = r.headers.get("date")  # the server's clock, for sync windows
            if r.status_code >= 500:
                # The server's own failure (e.g. its database is down): nothing to fix in the request.
                raise LabelStudioError(
                    f"{method} {path} -> HTTP {r.status_code}: Label Studio at {self.conn.base_url} failed while "
                    f"handling it ({_brief(r.text)}); see its server log (`sfr labelstudio status` names it) and, "
                    "with --db postgres, `sfr labelstudio db status`; rerun once it answers (what was stored stays)")
            if r.status_code >= 400:
                body = r.text[:300]
                raise LabelStudioError(f"{method} {path} -> HTTP {r.status_code}: {body}")
            return r.json() if r.content else None
        raise LabelStudioError(f"{method} {path}: cannot reach {self.conn.base_url} "
                               f"({type(last).__name__}: {last})")

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, payload: Any, **params) -> Any:
        return self.request("POST", path, json=payload, params=params)

    def iter_tasks(self, project_id: int, query: dict | None = None, all_fields: bool = False,
                   page_size: int = 500) -> Iterator[list[dict]]:
        """Pages of tasks from the data-manager task list. `all_fields` adds annotations and
        predictions; without it a task carries its data, updated_at and `annotations_ids`."""
        page = 1
        params: dict[str, Any] = {"project": project_id, "page_size": page_size}
        if all_fields:
            params["fields"] = "all"
        if query:
            params["query"] = json.dumps(query)
        while True:
            try:
                out = self.get("/api/tasks", page=page, **params)
            except LabelStudioError as e:
                # Past the last page the server answers 404.
                if "HTTP 404" in str(e):
                    return
                raise
            tasks = out.get("tasks", [])
            if not tasks:
                return
            yield tasks
            if len(tasks) < page_size:
                return
            page += 1


def _brief(body: str) -> str:
    """The first line of an error page's text, without markup (Django's 500 page is HTML)."""
    import re

    text = re.sub(r"<[^>]+>", " ", body[:2000])
    text = " ".join(text.split())
    return text[:200] or "no details"


def updated_since_query(updated_after: str | None) -> dict:
    """Data-manager query: tasks whose updated_at (touched by every annotation save or delete)
    is after `updated_after` (ISO 8601), oldest first."""
    q: dict[str, Any] = {"ordering": ["tasks:updated_at"]}
    if updated_after:
        q["filters"] = {"conjunction": "and", "items": [
            {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
             "value": updated_after}]}
    return q


__all__ = ["Connection", "LSHttp", "LabelStudioError", "ServerError", "connection", "sdk_client",
           "updated_since_query"]


def invite_link(conn: Connection, reset: bool = False) -> str:
    """The organisation's invite link (the only way to sign up: the local server runs with
    LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK). `reset` issues a new token, which invalidates
    every link handed out before (do it when an annotator leaves or a link leaked)."""
    with LSHttp(conn) as http:
        out = http.post("/api/invite/reset-token", {}) if reset else http.get("/api/invite")
    return conn.base_url.rstrip("/") + out["invite_url"]
