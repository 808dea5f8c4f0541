"""The model versions one reward server serves: a default reference that follows a registry alias,
requests pinned to a version, and a bounded LRU of loaded versions.

A GRPO job must not change reward models under its feet when someone promotes a new production
model. So each request may name a model (`X-SFR-Model` header or the `model` field): a model id
pins that exact version; an alias ('production', 'candidate') is resolved at most every
`refresh_s` seconds. A request naming no model gets the server's default reference (the alias it
was started with), re-resolved on the same interval, so promotion reaches unpinned clients
without a restart. The version that scored a request is in its response (`model_version`).

Resolution reads the warehouse (a file lock and a DuckDB connection, ~10-50 ms), so it happens
at most once per `refresh_s` per reference, in a worker thread, never per request.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sfreward.inference import InvalidInput, ItemScore, PreparedItem, Scorer
from sfreward.server.config import PoolConfig
from sfreward.server.payload import HTTPError
from warehouse.rowchecks import MAX_ID_CHARS

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """A request named a model this server cannot serve (message says which and why)."""


@dataclass
class LoadedModel:
    scorer: Scorer
    info: dict            # what /version reports about it (e.g. the proposer it was trained with)


class ModelPool:
    """`resolve(ref) -> model_id` (raises UnknownModel) and `load(model_id) -> LoadedModel`.
    Methods block (warehouse reads, weight loading): call them from worker threads."""

    def __init__(self, default_ref: str, resolve: Callable[[str], str], load: Callable[[str], LoadedModel],
                 config: PoolConfig | None = None, on_reload: Callable[[str, str], None] | None = None):
        self.default_ref = default_ref
        self._resolve_fn, self._load_fn = resolve, load
        self.config = config or PoolConfig()
        self.on_reload = on_reload
        self._lock = threading.Lock()           # caches
        self._load_lock = threading.Lock()      # one load at a time (memory)
        self._resolved: dict[str, tuple[str, float]] = {}
        self._loaded: collections.OrderedDict[str, LoadedModel] = collections.OrderedDict()
        self.default_version = self._resolve(default_ref, force=True)
        self._get_loaded(self.default_version)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def static(cls, scorer: Scorer, info: dict | None = None) -> "ModelPool":
        """One model (a directory or a Scorer built in process): a request may name its version
        or nothing; anything else is UnknownModel."""
        def resolve(ref: str) -> str:
            if ref == scorer.version:
                return ref
            raise UnknownModel(f"model {ref!r}: this server serves only {scorer.version} (started from a "
                               "model directory, not the registry)")

        return cls(scorer.version, resolve, lambda _id: LoadedModel(scorer, info or {}),
                   PoolConfig(max_loaded=1, refresh_s=3600.0))

    @classmethod
    def from_registry(cls, ws: Any, default_ref: str = "production", device: str | None = None,
                      scorer_config: Any = None, config: PoolConfig | None = None,
                      on_reload: Callable[[str, str], None] | None = None) -> "ModelPool":
        """Models of the registry in workspace `ws`, by id or alias (weights' sha256 verified)."""
        import torch

        from sfreward import registry

        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")

        def resolve(ref: str) -> str:
            try:
                return registry.resolve(ws, ref)
            except registry.RegistryError as e:
                raise UnknownModel(str(e)) from None

        def load(model_id: str) -> LoadedModel:
            model = registry.load_model(ws, model_id, device=dev).to(dev).eval()
            return LoadedModel(Scorer(model, model_id, dev, config=scorer_config),
                               {"trained_proposer": registry.trained_proposer(ws, model_id)})

        return cls(default_ref, resolve, load, config, on_reload)

    # -- lookups -----------------------------------------------------------------------
    def _resolve(self, ref: str, force: bool = False) -> str:
        now = time.monotonic()
        with self._lock:
            hit = self._resolved.get(ref)
        if hit is not None and not force and (hit[0] == ref or now - hit[1] < self.config.refresh_s):
            return hit[0]          # a model id resolves to itself for ever; aliases expire
        model_id = self._resolve_fn(ref)
        with self._lock:
            self._resolved[ref] = (model_id, now)
        return model_id

    def refresh_default(self) -> str:
        """The default reference's model id, re-read when older than refresh_s; a failed read
        keeps serving the previous version (logged)."""
        try:
            model_id = self._resolve(self.default_ref)
        except Exception as e:  # warehouse busy, alias deleted: keep serving what works
            log.warning("could not re-resolve %r (%s: %s); still serving %s", self.default_ref,
                        type(e).__name__, e, self.default_version)
            return self.default_version
        if model_id != self.default_version:
            self._get_loaded(model_id)            # load before switching: no request waits on a half state
            old, self.default_version = self.default_version, model_id
            log.info("alias %r moved: %s -> %s", self.default_ref, old, model_id)
            if self.on_reload is not None:
                self.on_reload(old, model_id)
        return self.default_version

    def get(self, ref: str | None) -> Scorer:
        """The scorer for a request: its pinned model (id or alias), else the default."""
        model_id = self.refresh_default() if ref is None else self._resolve(ref)
        return self._get_loaded(model_id).scorer

    def _get_loaded(self, model_id: str) -> LoadedModel:
        with self._lock:
            hit = self._loaded.get(model_id)
            if hit is not None:
                self._loaded.move_to_end(model_id)
                return hit
        with self._load_lock:
            with self._lock:
                hit = self._loaded.get(model_id)
            if hit is None:
                log.info("loading model %s", model_id)
                hit = self._load_fn(model_id)
            with self._lock:
                self._loaded[model_id] = hit
                self._loaded.move_to_end(model_id)
                while len(self._loaded) > self.config.max_loaded:
                    # Evict the least recently used, never the default. A request holding an evicted
                    # scorer finishes with it (the reference keeps it alive).
                    victim = next((k for k in self._loaded if k != self.default_version), None)
                    if victim is None:
                        break
                    del self._loaded[victim]
            return hit

    @property
    def default(self) -> Scorer:
        return self._get_loaded(self.default_version).scorer

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def info(self, model_id: str) -> dict:
        with self._lock:
            hit = self._loaded.get(model_id)
        return dict(hit.info) if hit is not None else {}

    # -- batched scoring ---------------------------------------------------------------
    @staticmethod
    def score_batch(pairs: Sequence[tuple[Scorer, PreparedItem | InvalidInput]]) -> list[ItemScore]:
        """The batcher's function: items tagged with their scorer, scored one model call per
        scorer (in batch order), results in input order."""
        by: dict[int, list[int]] = {}
        scorers: dict[int, Scorer] = {}
        for i, (s, _) in enumerate(pairs):
            by.setdefault(id(s), []).append(i)
            scorers[id(s)] = s
        out: list[ItemScore | None] = [None] * len(pairs)
        for key, idx in by.items():
            for i, r in zip(idx, scorers[key].score_prepared([pairs[i][1] for i in idx])):
                out[i] = r
        return out  # type: ignore[return-value]


def proposer_check(served: Any, trained: dict | None, proposing: bool) -> dict:
    """How the server's proposer compares with the one the model's training regions came from:
    {"serving": {proposer, config_hash} | None, "trained": ... | None, "match": bool | None}.
    `match` is None when either side is unknown (nothing to compare)."""
    serving = None
    if proposing:
        if served is None:
            from sfreward.regions.base import ProposerConfig
            served = ProposerConfig()
        serving = {"proposer": served.proposer, "config_hash": served.config_hash()}
    t = {"proposer": trained["proposer"], "config_hash": trained["config_hash"]} if trained else None
    match = None if serving is None or t is None else serving["config_hash"] == t["config_hash"]
    return {"serving": serving, "trained": t, "match": match}


async def pick_model(pool: ModelPool, header: str | None, field: str | None) -> Scorer:
    """A request's model: the X-SFR-Model header or the `model` field (both: they must agree),
    else the pool's default (422 for an unknown one). Resolving/loading may read the warehouse
    and load weights: off the event loop."""
    ref = (header or "").strip() or None
    if ref is not None and len(ref) > MAX_ID_CHARS:
        raise HTTPError(422, f"model: header X-SFR-Model is {len(ref)} characters; at most {MAX_ID_CHARS}")
    if ref is not None and field is not None and ref != field:
        raise HTTPError(422, f"model: header X-SFR-Model {ref!r} and field `model` {field!r} disagree; send one")
    ref = ref or field
    try:
        return await asyncio.to_thread(pool.get, ref)
    except UnknownModel as e:
        raise HTTPError(422, f"model: {e}") from None


def proposer_report(pool: ModelPool, served: Any, proposing: bool, model_id: str) -> dict:
    """`proposer_check` of the server's proposer against model `model_id`'s training proposer."""
    return proposer_check(served, pool.info(model_id).get("trained_proposer"), proposing)


def watch_proposer(pool: ModelPool, served: Any, proposing: bool, model_id: str) -> None:
    """Warn when the regions this server proposes differ from those the model was trained on."""
    rep = proposer_report(pool, served, proposing, model_id)
    if rep["match"] is False:
        log.warning("model %s was trained on regions from %s (config %s) but this server proposes with %s "
                    "(config %s); pass the training proposer's options to `sfr serve` (docs/serving.md)",
                    model_id, rep["trained"]["proposer"], rep["trained"]["config_hash"],
                    rep["serving"]["proposer"], rep["serving"]["config_hash"])
