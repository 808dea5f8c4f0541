"""Python client of the reward server, and a drop-in Flow-GRPO reward function built on it.

`RewardClient.score_group(...)` sends one group of rollouts and returns the server's JSON.
Transport errors, timeouts and 5xx/503 answers are retried with exponential backoff (503's
Retry-After is honoured); 4xx answers are not retried. When every try failed the client raises
`RewardServerError`: it never invents a reward (a silent 0 would train the policy on noise).

`make_flow_grpo_reward_fn(client)` returns `fn(images, prompts, metadata) -> (scores, info)`:
images float [N, 3, H, W] in [0, 1]; `metadata[i]` carries the rollout's `source` image and
optionally `regions` (on the source, see docs) and `group_id`. Rollouts are grouped by
`group_id`, else by (prompt, source bytes), and the groups are sent concurrently.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import httpx
import numpy as np

log = logging.getLogger(__name__)
RETRY_STATUS = {500, 502, 503, 504}
IMAGE_FORMATS = ("npy", "png")
TRANSPORTS = ("multipart", "json")


class RewardServerError(RuntimeError):
    """The server could not give a reward (after retries), or refused the request (4xx).
    `status` is the last HTTP status (None for transport errors)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class ClientConfig:
    timeout_s: float = 120.0        # per request (read); scoring a big group takes a while
    connect_timeout_s: float = 5.0
    retries: int = 3                # extra tries after the first
    backoff_s: float = 0.5          # first wait; doubles each try
    max_backoff_s: float = 10.0
    image_format: str = "npy"       # how arrays/tensors travel: "npy" (fast) or "png" (smaller)
    png_compress_level: int = 1     # fast PNG encoding when image_format="png"
    # "multipart": images as raw file parts (no base64: 25% fewer bytes, and the server skips
    # ~1 ms of base64 decoding per 256x256 image, on its busiest thread). "json": one JSON body
    # with base64 images, for callers that can only send JSON.
    transport: str = "multipart"
    # Pin the model that scores every request (a model id, or an alias re-read by the server):
    # a GRPO job pinned to a model id keeps it when another model is promoted. None: the
    # server's default alias. Each response names the version that scored it.
    model: str | None = None

    def __post_init__(self) -> None:
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")


def encode_image(image: Any, fmt: str = "npy", compress_level: int = 1) -> bytes:
    """Encoded bytes (PNG/JPEG/.npy) pass through as given; a PIL image, uint8 [H, W, 3] array
    or float [3, H, W] tensor/array in [0, 1] becomes `fmt`: "npy" (lossless raw uint8, cheap
    on both ends) or "png" (lossless, smaller, ~20-60x slower to encode and decode)."""
    from PIL import Image

    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, Image.Image):
        img = image.convert("RGB")
        if fmt == "npy":
            return _npy(np.asarray(img))
    else:
        if hasattr(image, "detach"):  # torch tensor, without importing torch here
            image = image.detach().float().cpu().numpy() if image.is_floating_point() \
                else image.detach().cpu().numpy()
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = np.moveaxis(arr, 0, -1)          # CHW -> HWC
        if arr.dtype != np.uint8:
            if not np.isfinite(arr).all():
                raise ValueError("image has non-finite values")
            arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if fmt == "npy":
            return _npy(arr)
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=compress_level)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class RewardClient:
    """Thread-safe (one httpx.Client with a connection pool)."""

    def __init__(self, base_url: str, token: str | None = None, config: ClientConfig | None = None,
                 max_connections: int = 32):
        self.base_url = base_url.rstrip("/")
        self.config = config or ClientConfig()
        tok = token if token is not None else os.environ.get("SFR_SERVER_TOKEN")
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        c = self.config
        if c.model:
            headers["X-SFR-Model"] = c.model
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers,
            timeout=httpx.Timeout(c.timeout_s, connect=c.connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RewardClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport with retries --------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> dict:
        c = self.config
        last = "no attempt made"
        status = None
        for attempt in range(c.retries + 1):
            wait = min(c.max_backoff_s, c.backoff_s * (2 ** attempt))
            try:
                r = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:  # connect refused, reset, timeouts
                last, status = f"{type(e).__name__}: {e}", None
            else:
                if r.status_code < 400:
                    try:
                        return r.json()
                    except json.JSONDecodeError:
                        raise RewardServerError(f"{method} {path}: response is not JSON", r.status_code) from None
                status = r.status_code
                last = f"HTTP {r.status_code}: {_message(r)}"
                if r.status_code not in RETRY_STATUS:
                    raise RewardServerError(f"{method} {path} refused: {last}", status)
                ra = r.headers.get("retry-after", "")
                if ra.replace(".", "", 1).isdigit():
                    wait = min(c.max_backoff_s, max(wait, float(ra)))
            if attempt < c.retries:
                log.warning("reward server %s %s failed (%s); retry %d/%d in %.1fs", method, path, last,
                            attempt + 1, c.retries, wait)
                time.sleep(wait)
        raise RewardServerError(f"{method} {self.base_url}{path} failed after {c.retries + 1} tries: {last}",
                                status)

    def encode(self, image: Any) -> bytes:
        return encode_image(image, self.config.image_format, self.config.png_compress_level)

    def health(self) -> dict:
        return self._request("GET", "/health")

    def version(self) -> dict:
        return self._request("GET", "/version")

    def score_group(self, source: Any, edits: Sequence[Any], instruction: str,
                    regions: list[dict] | None = None, group_id: str | None = None,
                    metadata: dict | None = None, std: str = "group", capture: bool = True) -> dict:
        """Score rollouts sharing one source and instruction. Images: bytes, PIL, uint8 HWC or
        float CHW in [0, 1]. Returns the server's JSON (see sfreward.server.app)."""
        kwargs = score_group_request(source, edits, instruction, regions, group_id, metadata, std, capture,
                                     self.config.transport, self.encode)
        return self._request("POST", "/v1/score_group", **kwargs)


def score_group_request(source: Any, edits: Sequence[Any], instruction: str, regions: list[dict] | None = None,
                        group_id: str | None = None, metadata: dict | None = None, std: str = "group",
                        capture: bool = True, transport: str = "multipart",
                        encode: Callable[[Any], bytes] = encode_image) -> dict[str, Any]:
    """The httpx arguments (`json=`, or `data=` and `files=`) of one POST /v1/score_group."""
    src, eds = encode(source), [encode(e) for e in edits]
    if transport == "json":
        payload: dict[str, Any] = {"instruction": instruction, "source": _b64(src),
                                   "edits": [_b64(e) for e in eds], "std": std, "capture": capture}
        if regions is not None:
            payload["regions"] = regions
        if group_id is not None:
            payload["group_id"] = group_id
        if metadata is not None:
            payload["metadata"] = metadata
        return {"json": payload}
    fields = {"instruction": instruction, "std": std, "capture": "true" if capture else "false"}
    if regions is not None:
        fields["regions"] = json.dumps(regions)
    if group_id is not None:
        fields["group_id"] = group_id
    if metadata is not None:
        fields["metadata"] = json.dumps(metadata)
    files = [("source", ("source", src, "application/octet-stream"))]
    files += [("edits", (f"edit{i}", e, "application/octet-stream")) for i, e in enumerate(eds)]
    return {"data": fields, "files": files}


def _message(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("error", {}).get("message") or body)[:500]
    except Exception:
        return r.text[:200]


# --------------------------------------------------------------------------- Flow-GRPO
REDUCE = ("mean", "min", "area")


def make_flow_grpo_reward_fn(client: RewardClient, reduce: str = "mean", max_workers: int = 8,
                             on_invalid: str = "raise") -> Callable:
    """A reward function `fn(images, prompts, metadata) -> (scores, info)` for Flow-GRPO-style
    trainers.

    images: float tensor/array [N, 3, H, W] in [0, 1] (or a list of images).
    prompts: N instructions. metadata: N dicts with `source` (the source image: bytes, PIL,
        uint8 HWC, float CHW) and optional `regions` (list of region dicts on the source) and
        `group_id`.
    scores: float32 [N], the rollout's region rewards reduced by `reduce` ("mean": mean of R_r;
        "min": the worst region; "area": area-weighted mean).
    info: "region_rewards" (N lists of K floats), "advantages" (N lists; within the groups of
        this call), "region_ids", "regions" (per rollout, the region list of its group, masks as
        COCO RLE), "valid" [N], "model_version", "group_index" [N].
    An invalid rollout raises RewardServerError (`on_invalid="raise"`) or scores NaN
    (`on_invalid="nan"`; the trainer must drop it). Server failures always raise.
    """
    if reduce not in REDUCE:
        raise ValueError(f"reduce must be one of {REDUCE}, got {reduce!r}")
    if on_invalid not in ("raise", "nan"):
        raise ValueError(f"on_invalid must be 'raise' or 'nan', got {on_invalid!r}")
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sfr-reward")

    def fn(images: Any, prompts: Sequence[str], metadata: Sequence[dict]) -> tuple[np.ndarray, dict]:
        n = len(prompts)
        if len(images) != n or len(metadata) != n:
            raise ValueError(f"images ({len(images)}), prompts ({n}) and metadata ({len(metadata)}) "
                             "must have the same length")
        groups: dict[Any, list[int]] = {}
        src_bytes: dict[int, bytes] = {}
        for i in range(n):
            md = metadata[i] or {}
            if "source" not in md:
                raise ValueError(f"metadata[{i}] has no 'source' image")
            src_bytes[i] = client.encode(md["source"])
            key = ("id", md["group_id"]) if md.get("group_id") is not None else \
                ("auto", prompts[i], hashlib.sha256(src_bytes[i]).hexdigest())
            groups.setdefault(key, []).append(i)

        def call(idx: list[int]) -> dict:
            md = metadata[idx[0]]
            return client.score_group(src_bytes[idx[0]], [images[i] for i in idx], prompts[idx[0]],
                                      regions=md.get("regions"), group_id=md.get("group_id"))

        keys = list(groups)
        answers = list(pool.map(call, [groups[k] for k in keys]))
        scores = np.full(n, np.nan, dtype=np.float32)
        info: dict[str, Any] = {"region_rewards": [None] * n, "advantages": [None] * n,
                                "region_ids": [None] * n, "regions": [None] * n, "valid": [False] * n,
                                "group_index": [0] * n, "model_version": None}
        for g, (key, ans) in enumerate(zip(keys, answers)):
            info["model_version"] = ans["model_version"]
            areas = np.array([r["area"] for r in ans["regions"]], dtype=np.float64)
            for j, i in enumerate(groups[key]):
                item = ans["items"][j]
                info["group_index"][i] = g
                info["regions"][i] = ans["regions"]
                info["region_ids"][i] = [r["region_id"] for r in ans["regions"]]
                if not item["valid"]:
                    if on_invalid == "raise":
                        raise RewardServerError(f"rollout {i} could not be scored: {item['error']}")
                    continue
                rw = np.asarray(item["rewards"], dtype=np.float64)
                scores[i] = {"mean": rw.mean(), "min": rw.min(),
                             "area": float((rw * areas).sum() / areas.sum())}[reduce]
                info["region_rewards"][i] = item["rewards"]
                info["advantages"][i] = ans["advantages"][j]
                info["valid"][i] = True
        return scores, info

    return fn


def make_multi_score_fn(client: RewardClient, reduce: str = "area", name: str = "sfreward", weight: float = 1.0,
                        max_workers: int = 8) -> Callable:
    """A drop-in for flow_grpo's `multi_score(device, score_dict)` closure:
    `fn(images, prompts, metadata, ref_images=None, only_strict=True) -> (score_details, info)`.

    The source images come from `ref_images` (N PIL images / uint8 HWC / float CHW, as flow_grpo's
    editing scripts pass them), else from `metadata[i]["source"]`. `score_details` is what
    multi_score returns: `{name: [N floats], "avg": [N floats]}` (`avg` = weight * score, the
    only reward here); `info` (multi_score's second value, `{}` there) carries the region rewards:
    "region_rewards", "advantages", "regions", "region_ids", "valid", "model_version",
    "group_index" (see `make_flow_grpo_reward_fn`). `only_strict` is accepted and unused (it only
    concerns GenEval). Any failure raises (`RewardServerError`, `ValueError`): never a zero.
    """
    base = make_flow_grpo_reward_fn(client, reduce=reduce, max_workers=max_workers, on_invalid="raise")

    def fn(images: Any, prompts: Sequence[str], metadata: Sequence[dict] | None, ref_images: Any = None,
           only_strict: bool = True) -> tuple[dict[str, list[float]], dict]:
        n = len(prompts)
        md = [dict(m or {}) for m in metadata] if metadata is not None else [{} for _ in range(n)]
        if len(md) != n:
            raise ValueError(f"metadata has {len(md)} entries for {n} prompts")
        if ref_images is not None:
            if len(ref_images) != n:
                raise ValueError(f"ref_images has {len(ref_images)} images for {n} prompts")
            for i in range(n):
                md[i]["source"] = ref_images[i]
        scores, info = base(images, prompts, md)
        s = [float(x) for x in scores]
        return {name: s, "avg": [weight * x for x in s]}, info

    return fn
