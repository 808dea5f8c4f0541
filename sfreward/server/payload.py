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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

# Text limits are ingestion's (docs/hostile-inputs.md): captured rollouts are ingested, so what
# the server accepts must be ingestible.
from warehouse.rowchecks import MAX_ID_CHARS, MAX_INSTRUCTION_CHARS


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class RegionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["edit", "context", "background"]
    mask: dict[str, Any] | None = None
    bbox: list[int] | None = Field(default=None, min_length=4, max_length=4)
    region_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00]*$")


class ScoreGroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)
    source: str = Field(min_length=1)
    edits: list[str] = Field(min_length=1)
    regions: list[RegionIn] | None = None
    group_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    metadata: dict[str, Any] | None = None
    std: Literal["group", "global"] = "group"
    capture: bool = True
    model: str | None = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)  # pinned model id/alias

    @field_validator("instruction")
    @classmethod
    def _instruction_has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank (only whitespace)")
        if "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @field_validator("group_id")
    @classmethod
    def _group_id_text(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @field_validator("regions")
    @classmethod
    def _unique_region_ids(cls, v: list[RegionIn] | None) -> list[RegionIn] | None:
        ids = [r.region_id for r in v or [] if r.region_id is not None]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate region_id(s) {dup[:5]}; each region needs its own id")
        return v


def _b64(data: str, name: str) -> bytes:
    if data.startswith("data:"):  # data URL: data:image/png;base64,....
        data = data.partition(",")[2]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPError(400, f"{name}: not valid base64") from None


class BodyTooLarge(Exception):
    pass


async def parse_request(request: Request, max_group_size: int) -> tuple[ScoreGroupRequest, bytes, list[bytes]]:
    """The request's body (already size-limited by the server's EdgeMiddleware), validated."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        raw = await request.body()
        # Parsing megabytes of JSON/base64 would stall the event loop: do it in a thread.
        return await asyncio.to_thread(parse_json, raw, max_group_size)
    if ctype == "multipart/form-data":
        # The whole body first (bounded by EdgeMiddleware), then one parse in a worker thread:
        # starlette's streaming form parser ran python-multipart once per received chunk on the
        # event loop, ~2.5 ms per 600 kB request on the thread every request waits for.
        raw = await request.body()
        return await asyncio.to_thread(parse_multipart, raw, request.headers.get("content-type", ""),
                                       max_group_size)
    raise HTTPError(415, f"content type {ctype or '(none)'!r} not supported; send application/json "
                         "or multipart/form-data")


def parse_multipart(raw: bytes, content_type: str, max_group_size: int) -> tuple[ScoreGroupRequest, bytes, list[bytes]]:
    """multipart/form-data: file parts `source` (one) and `edits` (one or more), text fields
    `instruction`, `regions` and `metadata` (JSON text), `group_id`, `std`, `capture`."""
    from python_multipart import FormParser
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPError(400, "malformed multipart body: the Content-Type header has no boundary")
    fields: dict[str, list[str]] = {}
    files: dict[str, list[bytes]] = {}

    def on_field(f: Any) -> None:
        value = f.value.decode("utf-8", "replace") if f.value is not None else ""
        fields.setdefault(f.field_name.decode("utf-8", "replace"), []).append(value)

    def on_file(f: Any) -> None:
        f.file_object.seek(0)
        files.setdefault(f.field_name.decode("utf-8", "replace"), []).append(f.file_object.read())

    try:
        # Every part stays in memory: the body is already in memory and size-limited.
        parser = FormParser("multipart/form-data", on_field, on_file, boundary=boundary,
                            config={"MAX_MEMORY_FILE_SIZE": len(raw) + 1})
        parser.write(raw)
        parser.finalize()
    except Exception as e:  # malformed multipart
        raise HTTPError(400, f"malformed multipart body: {e}") from None
    n_files = sum(len(v) for v in files.values())
    if n_files > max_group_size + 1 or len(fields) > 16:
        raise HTTPError(422, f"multipart: {n_files} files and {len(fields)} fields; at most "
                             f"{max_group_size + 1} files (source + edits) and 16 fields")
    if len(files.get("source", [])) != 1 or "source" in fields:
        raise HTTPError(422, "multipart: exactly one file field `source` is required")
    if not files.get("edits") or "edits" in fields:
        raise HTTPError(422, "multipart: one or more file fields `edits` are required")
    edits = files["edits"]
    payload: dict[str, Any] = {"source": "-", "edits": ["-"] * len(edits)}
    for k in ("instruction", "group_id", "std", "model"):
        if k in fields:
            payload[k] = fields[k][0]
    for k in ("regions", "metadata"):
        if k in fields:
            payload[k] = _loads(fields[k][0].encode("utf-8"), f"multipart field `{k}`")
    if "capture" in fields:
        payload["capture"] = fields["capture"][0].lower() not in ("0", "false", "no")
    return validate(payload, max_group_size), files["source"][0], edits


def parse_json(raw: bytes, max_group_size: int) -> tuple[ScoreGroupRequest, bytes, list[bytes]]:
    payload = _loads(raw, "body")
    if not isinstance(payload, dict):
        raise HTTPError(400, "body must be a JSON object")
    req = validate(payload, max_group_size)
    source = _b64(req.source, "source")
    edits = [_b64(e, f"edits[{i}]") for i, e in enumerate(req.edits)]
    return req, source, edits


def _loads(raw: bytes, what: str) -> Any:
    """JSON text -> object; 400 for anything malformed, too deeply nested included."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HTTPError(400, f"{what} is not valid JSON: {e}") from None
    except RecursionError:  # e.g. 100,000 nested brackets: the parser's stack, not our fault
        raise HTTPError(400, f"{what} is nested too deeply to parse") from None


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
