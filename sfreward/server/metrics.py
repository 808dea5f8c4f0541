"""Prometheus metrics of the reward server, rendered in the text exposition format (0.0.4).

Written by hand (a few counters and histograms) so the server needs no extra package. What is
exported is counts and durations only: no tokens, no request contents, no client addresses.
Label values are bounded sets (route templates, status codes, model ids the server loaded),
so a hostile client cannot grow the series without limit (unknown paths count as `other`).

Series:
    sfr_requests_total{route, status}            requests answered
    sfr_request_duration_seconds{route}          histogram, whole request (headers in -> body out)
    sfr_group_size                               histogram, rollouts per /v1/score_group request
    sfr_items_scored_total{model_version}        valid items scored by each model version
    sfr_items_invalid_total                      rollouts answered valid=false (bad image, size ...)
    sfr_errors_total{route, status}              answers with status >= 400
    sfr_model_reloads_total                      times the default alias moved to another version
    sfr_models_loaded                            gauge: model versions held in memory
    sfr_queue_items                              gauge: items waiting for the model
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Callable, Iterable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
GROUP_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128)
ROUTES = ("/v1/score_group", "/health", "/version", "/metrics")


def route_label(path: str) -> str:
    """The route for a request path; anything else is 'other' (bounded label values)."""
    return path if path in ROUTES else "other"


class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics: le buckets, +Inf, _sum, _count)."""

    def __init__(self, buckets: Iterable[float]):
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)   # last: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, acc = [], 0
        sep = "," if labels else ""
        for b, n in zip(self.bounds, self.counts):
            acc += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{_num(b)}"}} {acc}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{lab} {_num(self.sum)}", f"{name}_count{lab} {self.count}"]
        return out


def _num(v: float) -> str:
    if isinstance(v, int) or (math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return str(int(v))
    return repr(float(v))


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters of one server process. `gauges` are read when rendered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.group_size = Histogram(GROUP_BUCKETS)
        self.items_scored: dict[str, int] = {}
        self.items_invalid = 0
        self.reloads = 0
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        route = route_label(path)
        with self._lock:
            key = (route, int(status))
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_group(self, size: int, n_invalid: int, model_version: str, n_scored: int) -> None:
        with self._lock:
            self.group_size.observe(size)
            self.items_invalid += n_invalid
            self.items_scored[model_version] = self.items_scored.get(model_version, 0) + n_scored

    def observe_reload(self) -> None:
        with self._lock:
            self.reloads += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_text, read)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP sfr_requests_total Requests answered, by route and HTTP status.",
                     "# TYPE sfr_requests_total counter"]
            lines += [f'sfr_requests_total{{route="{r}",status="{s}"}} {n}'
                      for (r, s), n in sorted(self.requests.items())]
            lines += ["# HELP sfr_errors_total Requests answered with an HTTP status >= 400.",
                      "# TYPE sfr_errors_total counter"]
            lines += [f'sfr_errors_total{{route="{r}",status="{s}"}} {n}'
                      for (r, s), n in sorted(self.requests.items()) if s >= 400]
            lines += ["# HELP sfr_request_duration_seconds Time to answer a request, seconds.",
                      "# TYPE sfr_request_duration_seconds histogram"]
            for r, h in sorted(self.latency.items()):
                lines += h.lines("sfr_request_duration_seconds", f'route="{r}"')
            lines += ["# HELP sfr_group_size Rollouts per /v1/score_group request that reached scoring.",
                      "# TYPE sfr_group_size histogram"]
            lines += self.group_size.lines("sfr_group_size")
            lines += ["# HELP sfr_items_scored_total Rollouts scored valid, by the model version that scored them.",
                      "# TYPE sfr_items_scored_total counter"]
            lines += [f'sfr_items_scored_total{{model_version="{_esc(v)}"}} {n}'
                      for v, n in sorted(self.items_scored.items())]
            lines += ["# HELP sfr_items_invalid_total Rollouts answered valid=false (undecodable, wrong size, ...).",
                      "# TYPE sfr_items_invalid_total counter", f"sfr_items_invalid_total {self.items_invalid}",
                      "# HELP sfr_model_reloads_total Times the served alias moved to another model version.",
                      "# TYPE sfr_model_reloads_total counter", f"sfr_model_reloads_total {self.reloads}"]
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {_num(float(read()))}"]
        return "\n".join(lines) + "\n"
