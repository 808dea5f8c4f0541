"""Optional push path: a tiny webhook receiver that syncs a project as soon as Label Studio
reports an annotation change (the Dagster sensor polls instead; both may run).

    app = webhook_app(ws)                        # FastAPI; serve with uvicorn on 127.0.0.1
    register_webhook(ws, "sfreward-v1", "http://127.0.0.1:8765/labelstudio")

Events for one project are coalesced: a sync already running absorbs later events (its
incremental cursor picks them up, or the follow-up sync does).
"""
from __future__ import annotations

import logging
import threading
from urllib.parse import urlencode

from fastapi import FastAPI, Request

from annotation.client import Connection, LSHttp, connection
from annotation.sync import sync_project
from warehouse.db import Warehouse
from warehouse.workspace import Workspace

log = logging.getLogger(__name__)
ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"]


def register_webhook(ws: Workspace, project_key: str, url: str, conn: Connection | None = None) -> int:
    """Create (or reuse) the project's webhook to `url`; returns its id. The project key rides in
    the URL's query, so Label Studio need not send payloads (annotation results can be large)."""
    conn = conn or connection(ws)
    pid = Warehouse.open(ws).query("SELECT ls_project_id FROM ls_projects WHERE project_key = ?", [project_key])
    if not pid:
        raise ValueError(f"project {project_key!r} is unknown here; push tasks to it first")
    url = f"{url}{'&' if '?' in url else '?'}{urlencode({'project_key': project_key})}"
    with LSHttp(conn) as http:
        for h in http.get("/api/webhooks/", project=pid[0][0]):
            if h.get("url") == url:
                return int(h["id"])
        out = http.post("/api/webhooks/", {"project": pid[0][0], "url": url, "send_payload": False,
                                           "send_for_all_actions": False, "actions": ACTIONS, "is_active": True})
        return int(out["id"])


class _Coalescer:
    """Runs sync_project per project in a background thread; events during a run trigger one more."""

    def __init__(self, ws: Workspace, conn: Connection | None):
        self.ws, self.conn = ws, conn
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.pending: set[str] = set()
        self.runs = 0

    def request(self, project_key: str) -> None:
        with self.lock:
            if project_key in self.running:
                self.pending.add(project_key)
                return
            self.running.add(project_key)
        threading.Thread(target=self._run, args=(project_key,), daemon=True).start()

    def _run(self, project_key: str) -> None:
        while True:
            try:
                sync_project(self.ws, project_key, conn=self.conn)
                self.runs += 1
            except Exception:  # keep serving; the sensor's poll is the safety net
                log.exception("webhook-triggered sync of %s failed", project_key)
            with self.lock:
                if project_key in self.pending:
                    self.pending.discard(project_key)
                    continue
                self.running.discard(project_key)
                return


def webhook_app(ws: Workspace, conn: Connection | None = None):
    """A FastAPI app with POST /labelstudio (the webhook target) and GET /health."""
    app = FastAPI(title="sfr Label Studio webhook receiver")
    co = _Coalescer(ws, conn)
    app.state.coalescer = co

    @app.get("/health")
    def health() -> dict:
        return {"status": "UP", "syncs": co.runs}

    @app.post("/labelstudio")
    async def receive(request: Request) -> dict:
        event = await request.json()
        if event.get("action") not in ACTIONS:
            return {"ignored": event.get("action")}
        key = request.query_params.get("project_key")
        known = {r[0] for r in Warehouse.open(ws).query("SELECT project_key FROM ls_projects")}
        if key not in known:
            return {"ignored": f"unknown project {key!r}"}
        co.request(key)
        return {"syncing": key}

    return app
