"""The reward server: an HTTP service scoring groups of rollouts for GRPO trainers.

POST /v1/score_group  (Authorization: Bearer <token>)
    JSON: {"instruction": str, "source": base64, "edits": [base64, ...],   (PNG/JPEG/.npy bytes)
           "regions": [{"kind", "mask": COCO RLE | "bbox": [x1, y1, x2, y2], "region_id"?}]?,
           "group_id"?: str, "metadata"?: {...}, "std"?: "group" | "global", "capture"?: bool}
    or multipart/form-data with files `source`, `edits` (repeated) and fields `instruction`,
    `regions` (JSON text), `group_id`, `metadata` (JSON text), `std`, `capture`.
    Regions are defined once per group on the source: supplied by the client, else proposed by
    `sfreward.regions.propose_group` (when installed), else the whole image.
    -> {"model_version", "group_id", "regions": [{region_id, kind, bbox, area, mask}],
        "region_source": "supplied" | "proposed" | "whole_image",
        "items": [ItemScore dict + "index"], "valid": [G], "rewards": [G][K] | null rows,
        "advantages": [G][K] | null rows, "n_valid"}
GET /health, GET /version, GET /metrics (Prometheus text format) (no auth; nothing secret).

A request may pin the model version that scores it: header `X-SFR-Model: <model id | alias>`
(or the JSON/multipart field `model`); without one, the server's default alias, re-resolved every
few seconds so a promotion reaches unpinned clients without a restart (sfreward.server.models).

Every response carries the model version (header X-Model-Version, and in JSON bodies).
Errors are JSON {"error": {"status", "message"}, "model_version"}: 400 malformed payload
(JSON nested too deeply included), 401 missing/wrong token, 413 body too large or a group whose
decoded images could never fit the decode budget, 415 content type, 422 invalid content,
503 (+ Retry-After) when the queue or the decode budget (sfreward.server.admission) is full.
The server runs under uvicorn with `sfreward.server.protocol` (request-head timeout, credentials
redacted from logs).
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
from typing import Any, Callable

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from sfreward.inference import (InvalidInput, ItemScore, PreparedItem, Scorer, decode_image, normalize_regions,
                                propose_regions, region_meta)
from sfreward.server.admission import DecodeBudget, request_cost
from sfreward.server.batcher import DynamicBatcher, QueueFull
from sfreward.server.capture import RolloutCapture
from sfreward.server.config import ServerConfig
from sfreward.server.metrics import Metrics
from sfreward.server.models import ModelPool, pick_model, proposer_report, watch_proposer
from sfreward.server.payload import BodyTooLarge, HTTPError, ScoreGroupRequest, parse_request
from sfreward.server.protocol import DEFAULT_HEAD_TIMEOUT_S, uvicorn_config
from warehouse import masks as mask_codec

log = logging.getLogger(__name__)
API_VERSION = "v1"
_PROPOSE_LOCK = threading.Lock()


class EdgeMiddleware:
    """Outermost layer: stamps X-Model-Version on every response (the endpoint's own when it set
    one: a pinned model), refuses bodies over `max_bytes`: by Content-Length up front, and while
    streaming for chunked uploads (the endpoint's read raises BodyTooLarge -> 413), and counts
    every answer in `metrics` (status, latency)."""

    def __init__(self, app: Any, max_bytes: int, version: Any, metrics: Metrics | None = None):
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics
        self._version = version if callable(version) else (lambda: version)

    @property
    def version(self) -> str:
        return self._version()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [500]
        if self.metrics is not None:
            inner_send = send

            async def send(msg: dict) -> None:
                if msg["type"] == "http.response.start":
                    status[0] = msg["status"]
                await inner_send(msg)
        try:
            await self._serve(scope, receive, send)
        finally:
            if self.metrics is not None:
                self.metrics.observe_request(scope.get("path", ""), status[0], time.perf_counter() - t0)

    async def _serve(self, scope: dict, receive: Any, send: Any) -> None:
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                resp = _error(413, f"request body of {int(v):,} bytes exceeds the limit of "
                                   f"{self.max_bytes:,} bytes", self.version)
                return await resp(scope, receive, send)
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return msg

        async def versioned_send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                headers = list(msg.get("headers", []))
                if not any(k.lower() == b"x-model-version" for k, _ in headers):
                    msg = {**msg, "headers": headers + [(b"x-model-version", self.version.encode())]}
            await send(msg)

        await self.app(scope, limited_receive, versioned_send)


def _error(status: int, message: str, version: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}, "model_version": version},
                        status_code=status, headers=headers)


def create_app(scorer: Scorer | ModelPool, config: ServerConfig, capture: RolloutCapture | None = None,
               metrics: Metrics | None = None) -> FastAPI:
    """The ASGI app for one model (a Scorer) or the versions of a ModelPool. The batcher
    starts/stops with the app's lifespan."""
    pool = scorer if isinstance(scorer, ModelPool) else ModelPool.static(scorer)
    metrics = metrics or Metrics()
    batcher: DynamicBatcher = DynamicBatcher(ModelPool.score_batch, config.batch)
    budget = DecodeBudget(config.decode_budget_bytes)
    state = {"inflight": 0}
    _watch_models(pool, config, metrics)
    metrics.gauge("sfr_models_loaded", "Model versions held in memory.", lambda: len(pool.loaded_versions()))
    metrics.gauge("sfr_queue_items", "Rollouts waiting for the model.", lambda: batcher.pending)
    metrics.gauge("sfr_requests_inflight", "Score requests being parsed or scored.", lambda: state["inflight"])

    def current() -> str:
        return pool.default_version

    app = FastAPI(title="SFReward reward server", version=API_VERSION, lifespan=_lifespan(batcher, capture),
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.capture, app.state.scorer = batcher, capture, pool.default
    app.state.budget, app.state.pool, app.state.metrics = budget, pool, metrics
    app.add_middleware(EdgeMiddleware, max_bytes=config.max_request_bytes, version=current, metrics=metrics)
    _add_error_handlers(app, config, current)
    _add_info_routes(app, pool, batcher, budget, config, metrics, state, current)
    _add_score_route(app, pool, batcher, budget, config, metrics, state, capture)
    return app


def _watch_models(pool: ModelPool, config: ServerConfig, metrics: Metrics) -> None:
    """Follow the proposer of the default model, and again after every reload (counted)."""
    watch_proposer(pool, config.proposer_config, config.propose_regions, pool.default_version)
    if pool.on_reload is None:
        def reloaded(old: str, new: str) -> None:
            metrics.observe_reload()
            watch_proposer(pool, config.proposer_config, config.propose_regions, new)
        pool.on_reload = reloaded


def _lifespan(batcher: DynamicBatcher, capture: RolloutCapture | None):
    """The app's lifespan: the batcher runs while the app does; captured rollouts are flushed
    at shutdown."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            if capture is not None:
                await asyncio.to_thread(capture.flush)
    return lifespan


def _add_error_handlers(app: FastAPI, config: ServerConfig, current: Callable[[], str]) -> None:
    """Every error is the JSON body {"error": {status, message}, "model_version"}."""
    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, e: HTTPError):
        return _error(e.status, e.message, current(), e.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge):
        return _error(413, f"request body exceeds the limit of {config.max_request_bytes:,} bytes", current())

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, e: ClientDisconnect):
        # Not a server fault: the client closed the connection before sending its whole body.
        log.info("client disconnected before its request to %s was read", request.url.path)
        return _error(400, "client disconnected", current())

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log.error("internal error on %s: %s: %s", request.url.path, type(e).__name__, e)
        return _error(500, "internal server error", current())

    @app.exception_handler(404)
    async def _not_found(request: Request, e: Exception):
        return _error(404, f"no route {request.method} {request.url.path}", current())

    @app.exception_handler(405)
    async def _bad_method(request: Request, e: Exception):
        return _error(405, f"method {request.method} not allowed on {request.url.path}", current())


def _add_info_routes(app: FastAPI, pool: ModelPool, batcher: DynamicBatcher, budget: DecodeBudget,
                     config: ServerConfig, metrics: Metrics, state: dict, current: Callable[[], str]) -> None:
    """GET /health, /version and /metrics (no token: they reveal no inputs or scores)."""
    @app.get("/health")
    async def health():
        st = batcher.stats
        return {"status": "ok", "model_version": current(), "queue": batcher.pending,
                "max_queue": config.batch.max_queue, "inflight": state["inflight"],
                "model_calls": st.calls, "items_scored": st.items, "max_batch_seen": st.max_batch_seen,
                "decode_budget_in_use": budget.in_use, "decode_budget": budget.capacity}

    @app.get("/version")
    async def version_info():
        await asyncio.to_thread(pool.refresh_default)
        default = pool.default
        return {"model_version": default.version, "api": API_VERSION, "image_size": list(default.image_size),
                "max_batch_size": config.batch.max_batch_size, "max_group_size": config.max_group_size,
                "max_request_bytes": config.max_request_bytes, "max_regions": config.max_regions,
                "default_model": pool.default_ref, "loaded_models": pool.loaded_versions(),
                "proposer": proposer_report(pool, config.proposer_config, config.propose_regions,
                                            default.version)}

    @app.get("/metrics")
    async def prometheus_metrics():
        # No token: counts and durations only, like /health (docs/serving.md, "Metrics").
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _add_score_route(app: FastAPI, pool: ModelPool, batcher: DynamicBatcher, budget: DecodeBudget,
                     config: ServerConfig, metrics: Metrics, state: dict, capture: RolloutCapture | None) -> None:
    """POST /v1/score_group (bearer token): parse, admit against the decode budget, score through
    the batcher, answer, then offer the group to the rollout capture."""
    token = config.token.encode()

    def check_auth(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        # compare_digest on bytes: constant time whatever the given token is.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise HTTPError(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})

    @app.post("/v1/score_group")
    async def score_group(request: Request):
        check_auth(request)
        if state["inflight"] >= config.max_inflight_requests:
            raise HTTPError(503, "server busy: too many requests in flight",
                            {"Retry-After": str(config.retry_after_s)})
        state["inflight"] += 1
        try:
            req, source, edits = await parse_request(request, config.max_group_size)
            scorer = await pick_model(pool, request.headers.get("x-sfr-model"), req.model)
            version = scorer.version
            if req.regions is not None and len(req.regions) > config.max_regions:
                raise HTTPError(422, f"regions: {len(req.regions)} regions; at most {config.max_regions} per group")
            if not batcher.has_room(len(edits)):
                raise HTTPError(503, f"queue full ({batcher.pending} of {config.batch.max_queue} items)",
                                {"Retry-After": str(config.retry_after_s)})
            prepared, regions_out, region_source = await asyncio.to_thread(
                _admit_and_prepare, scorer, config, budget, req, source, edits)
            todo = [i for i, p in enumerate(prepared) if not isinstance(p, InvalidInput)]
            try:
                scored = await batcher.submit([(scorer, prepared[i]) for i in todo])
            except QueueFull as e:
                raise HTTPError(503, f"queue full: {e}", {"Retry-After": str(config.retry_after_s)}) from None
            results: list[ItemScore] = [ItemScore(valid=False, error=str(p), model_version=version)
                                        if isinstance(p, InvalidInput) else None for p in prepared]  # type: ignore
            for i, s in zip(todo, scored):
                results[i] = s
            n_ok = sum(r.valid for r in results)
            metrics.observe_group(len(results), len(results) - n_ok, version, n_ok)
            # Built and serialized off the event loop (json.dumps of a group is ~0.5 ms).
            body = await asyncio.to_thread(_response_bytes, results, regions_out, region_source, req, version)
            if capture is not None and req.capture and capture.enabled:
                # After the response is built; encoding/writing happens off the event loop.
                asyncio.get_running_loop().run_in_executor(
                    None, _offer, capture, source, edits, results, req)
            return Response(body, media_type="application/json", headers={"X-Model-Version": version})
        finally:
            state["inflight"] -= 1


def _offer(capture: RolloutCapture, source: bytes, edits: list[bytes], results: list[ItemScore],
           req: ScoreGroupRequest) -> None:
    try:
        capture.offer(source, edits, results, req.instruction, req.group_id, req.metadata)
    except Exception:  # capture must never break serving
        log.exception("rollout capture failed")


def _n_masks(req: ScoreGroupRequest, config: ServerConfig) -> int:
    """Masks a group will hold at the source's size: its regions plus a background."""
    if req.regions is not None:
        return len(req.regions) + 1
    if config.propose_regions:
        return int(getattr(config.proposer_config, "max_regions", 12)) + 1
    return 1


def _admit_and_prepare(scorer: Scorer, config: ServerConfig, budget: DecodeBudget, req: ScoreGroupRequest,
                       source: bytes, edits: list[bytes]) -> tuple[list, list[dict], str]:
    """`_prepare` once the group's estimated decode cost is charged to the budget (413 if it could
    never fit, 503 + Retry-After while it does not fit now). Runs in a worker thread: JPEG
    headers go through PIL (~50 us each, up to 65 per group), too slow for the event loop."""
    cost = request_cost(source, edits, _n_masks(req, config))
    if not budget.fits_at_all(cost):
        raise HTTPError(413, f"decoding this group needs ~{cost / (1 << 20):,.0f} MiB, over the "
                             f"server's decode budget of {budget.capacity / (1 << 20):,.0f} MiB; "
                             "send fewer or smaller images per request")
    if not budget.try_acquire(cost):
        raise HTTPError(503, "server busy: the decode budget is in use by other requests",
                        {"Retry-After": str(config.retry_after_s)})
    try:  # the full-resolution arrays live only inside _prepare
        return _prepare(scorer, config, req, source, edits)
    finally:
        budget.release(cost)


def _prepare(scorer: Scorer, config: ServerConfig, req: ScoreGroupRequest, source: bytes,
             edits: list[bytes]) -> tuple[list, list[dict], str]:
    """Decode, propose or check regions once for the group, resize. Runs in a worker thread."""
    try:
        src = decode_image(source, "source", scorer.config.max_pixels)
    except InvalidInput as e:
        raise HTTPError(422, str(e)) from None
    decoded: list[np.ndarray | InvalidInput] = []
    for j, e in enumerate(edits):
        try:
            decoded.append(decode_image(e, f"edits[{j}]", scorer.config.max_pixels))
        except InvalidInput as err:
            decoded.append(err)
    if req.regions is not None:
        regions: list | None = [r.model_dump() for r in req.regions]
        region_source = "supplied"
    else:
        regions = None
        if config.propose_regions:
            ok = [d for d in decoded if isinstance(d, np.ndarray) and d.shape == src.shape]
            if ok:  # with no usable edit every item is invalid anyway
                try:
                    # One proposal at a time: SAM is shared per process and not thread-safe.
                    with _PROPOSE_LOCK:
                        regions = propose_regions(src, ok, config.proposer_config)
                except Exception as e:  # proposer failure is this group's problem, reported clearly
                    raise HTTPError(422, f"region proposal failed on the source: {e}") from None
        region_source = "proposed" if regions is not None else "whole_image"
    try:
        norm = normalize_regions(regions, src.shape[0], src.shape[1], config.max_regions)
    except InvalidInput as e:
        raise HTTPError(422, f"regions: {e}") from None
    prepared = scorer.prepare_group(src, decoded, req.instruction, norm)
    # (region_id, kind, bbox, area) per region: already computed for any scorable item.
    meta = next((p.regions for p in prepared if isinstance(p, PreparedItem)), None) \
        or [region_meta(r) for r in norm]
    regions_out = [{"region_id": rid, "kind": kind, "bbox": bbox, "area": area, "mask": mask_codec.encode(r.mask)}
                   for (rid, kind, bbox, area), r in zip(meta, norm)]
    return prepared, regions_out, region_source


def _response_bytes(results: list[ItemScore], regions_out: list[dict], region_source: str,
                    req: ScoreGroupRequest, version: str) -> bytes:
    """`_response` as JSON bytes, the way starlette's JSONResponse renders (compact, UTF-8, no NaN)."""
    return json.dumps(_response(results, regions_out, region_source, req, version), ensure_ascii=False,
                      allow_nan=False, separators=(",", ":")).encode("utf-8")


def _response(results: list[ItemScore], regions_out: list[dict], region_source: str,
              req: ScoreGroupRequest, version: str) -> dict:
    from sfreward.credit import region_advantages

    k = len(regions_out)
    valid = [r.valid for r in results]
    rewards = torch.tensor([r.rewards if r.valid else [0.0] * k for r in results], dtype=torch.float32)
    vmask = torch.tensor([[v] * k for v in valid], dtype=torch.bool)
    ra = region_advantages(rewards, vmask, std=req.std)
    # An entry without an advantage (invalid item; zero-spread region without a whole-image
    # fallback) is null, never 0: the trainer must not mistake it for "average".
    adv = [[a if m else None for a, m in zip(ar, mr)] if v else None
           for ar, mr, v in zip(ra.advantages.tolist(), ra.mask.tolist(), valid)]
    items = []
    for i, r in enumerate(results):
        d = r.to_dict()
        d.pop("model_version", None)
        items.append({"index": i, **d})
    return {
        "model_version": version,
        "group_id": req.group_id,
        "regions": regions_out,
        "region_source": region_source,
        "items": items,
        "valid": valid,
        "n_valid": int(sum(valid)),
        "rewards": [r.rewards if r.valid else None for r in results],
        "advantages": adv,
        "advantage_fallback": [f if v else None for f, v in zip(ra.fallback.tolist(), valid)],
    }


# --------------------------------------------------------------------------- running
class BackgroundServer:
    """uvicorn in a daemon thread on an already-bound socket (no port race). For tests,
    benchmarks and notebooks; `sfr serve` runs uvicorn in the foreground."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 head_timeout_s: float = DEFAULT_HEAD_TIMEOUT_S, **uvicorn_kwargs: Any):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.app = app
        self.host, self.port = host, self.sock.getsockname()[1]
        kw = {"log_level": "warning", "access_log": False, **uvicorn_kwargs}
        self.server = uvicorn.Server(uvicorn_config(app, head_timeout_s, **kw))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("reward server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
