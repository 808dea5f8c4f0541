"""Request payloads of the reward server: the JSON and multipart forms of POST /v1/score_group,
validated into a `ScoreGroupRequest` plus the raw image bytes. Problems raise `HTTPError` with
the status and a message naming the field (400 malformed, 415 content type, 422 invalid)."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class RegionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["edit", "context", "background"]
    mask: dict[str, Any] | None = None
    bbox: list[int] | None = Field(default=None, min_length=4, max_length=4)
    region_id: str | None = None


class ScoreGroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instruction: str = Field(min_length=1)
    source: str = Field(min_length=1)
    edits: list[str] = Field(min_length=1)
    regions: list[RegionIn] | None = None
    group_id: str | None = None
    metadata: dict[str, Any] | None = None
    std: Literal["group", "global"] = "group"
    capture: bool = True


def _b64(data: str, name: str) -> bytes:
    if data.startswith("data:"):  # data URL: data:image/png;base64,....
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"{name}: not valid base64") from None


class BodyTooLarge(Exception):
    pass


async def parse_request(request: Request, max_group_size: int, max_request_bytes: int) -> tuple[ScoreGroupRequest, bytes, list[bytes]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        raw = await request.body()
        # Parsing megabytes of JSON/base64 would stall the event loop: do it in a thread.
        return await asyncio.to_thread(parse_json, raw, max_group_size)
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=max_group_size + 1, max_fields=16,
                                      max_part_size=max_request_bytes)
        except BodyTooLarge:
            raise
        except Exception as e:  # malformed multipart
            raise HTTPError(400, f"malformed multipart body: {e}") from None
        files = {k: [v for v in form.getlist(k)] for k in ("source", "edits")}
        if len(files["source"]) != 1 or isinstance(files["source"][0], str):
            raise HTTPError(422, "multipart: exactly one file field `source` is required")
        if not files["edits"] or any(isinstance(v, str) for v in files["edits"]):
            raise HTTPError(422, "multipart: one or more file fields `edits` are required")
        payload: dict[str, Any] = {"source": "-", "edits": ["-"] * len(files["edits"])}
        for k in ("instruction", "group_id", "std"):
            if form.get(k) is not None:
                payload[k] = form.get(k)
        for k in ("regions", "metadata"):
            if form.get(k) is not None:
                try:
                    payload[k] = json.loads(form.get(k))
                except json.JSONDecodeError as e:
                    raise HTTPError(400, f"multipart field `{k}` is not valid JSON: {e}") from None
        if form.get("capture") is not None:
            payload["capture"] = str(form.get("capture")).lower() not in ("0", "false", "no")
        req = validate(payload, max_group_size)
        source = await files["source"][0].read()
        edits = [await f.read() for f in files["edits"]]
        await form.close()
        return req, source, edits
    raise HTTPError(415, f"content type {ctype or '(none)'!r} not supported; send application/json "
                         "or multipart/form-data")


def parse_json(raw: bytes, max_group_size: int) -> tuple[ScoreGroupRequest, bytes, list[bytes]]:
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise HTTPError(400, "body must be a JSON object")
    req = validate(payload, max_group_size)
    source = _b64(req.source, "source")
    edits = [_b64(e, f"edits[{i}]") for i, e in enumerate(req.edits)]
    return req, source, edits


def validate(payload: dict, max_group_size: int) -> ScoreGroupRequest:
    try:
        req = ScoreGroupRequest.model_validate(payload)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
                             for err in e.errors()[:10])
        raise HTTPError(422, f"invalid request: {problems}") from None
    if len(req.edits) > max_group_size:
        raise HTTPError(422, f"group has {len(req.edits)} edits; at most {max_group_size} per request")
    return req
