"""The reward server's settings (`ServerConfig`, and the model pool's `PoolConfig`), apart from the
app so that the command line can build its flags from them without importing the web framework."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sfreward.inputs import DEFAULT_MAX_REGIONS
from sfreward.server.admission import DEFAULT_BUDGET_BYTES
from sfreward.server.batcher import BatcherConfig, SettingError, check_float, check_int
from sfreward.server.protocol import DEFAULT_HEAD_TIMEOUT_S


@dataclass
class ServerConfig:
    """Every setting of a reward server, checked when built (SettingError names the field)."""
    token: str                                  # Bearer token clients must send
    # Fields with help text are the ones `sfr serve` exposes (pipelines/configs.py).
    max_request_bytes: int = field(default=64 << 20, metadata={"help": "largest request body"})
    max_group_size: int = field(default=64, metadata={"help": "rollouts per request"})
    max_inflight_requests: int = 128            # requests being parsed/scored at once
    retry_after_s: int = 1                      # advertised on 503
    propose_regions: bool = field(default=True, metadata={
        "help": "propose regions when the client sends none (--no-propose: the whole image)"})
    proposer_config: Any = None                 # sfreward.regions.ProposerConfig (None = default)
    max_regions: int = field(default=DEFAULT_MAX_REGIONS, metadata={"help": "regions per group; more -> 422"})
    decode_budget_bytes: int = field(default=DEFAULT_BUDGET_BYTES, metadata={
        "help": "memory for decoded images of requests being prepared; full -> 503"})
    head_timeout_s: float = field(default=DEFAULT_HEAD_TIMEOUT_S, metadata={
        "help": "seconds a client has to send a request's line and headers; slower -> closed"})
    batch: BatcherConfig = field(default_factory=BatcherConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or len(self.token) < 8:
            raise SettingError("token", "must be at least 8 characters")
        for name in ("max_request_bytes", "max_group_size", "max_inflight_requests", "retry_after_s",
                     "max_regions", "decode_budget_bytes"):
            check_int(self, name)
        check_float(self, "head_timeout_s")
        if not isinstance(self.batch, BatcherConfig):
            raise SettingError("batch", f"must be a BatcherConfig, got {type(self.batch).__name__}")
        if self.max_group_size > self.batch.max_queue:
            # A group the queue can never hold would get 503 forever.
            raise SettingError("max_group_size", f"{self.max_group_size} must not exceed the batch queue "
                                                 f"(max_queue {self.batch.max_queue})")


@dataclass
class PoolConfig:
    """Model versions a server keeps (sfreward.server.models.ModelPool)."""
    max_loaded: int = field(default=3, metadata={
        "help": "model versions kept in memory for pinned requests (LRU; the default is never evicted)"})
    refresh_s: float = field(default=5.0, metadata={
        "help": "how often the default alias (and aliases clients pin) is re-read from the registry, "
                "seconds, so a promotion reaches unpinned clients without a restart"})

    def __post_init__(self) -> None:
        check_int(self, "max_loaded")
        check_float(self, "refresh_s", 0.0, strict=False)
