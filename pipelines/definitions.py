"""One Definitions object merged from the per-domain modules in `pipelines.defs`.

Each domain module exposes `defs: dagster.Definitions`. The domains are imported by name and
listed in data-flow order: a missing or broken domain is an import error here, never a
domain silently left out of the code location.
"""
from __future__ import annotations

import dagster as dg

from pipelines.defs import annotation, curation, demo, ingest, regions, serving, training
from pipelines.resources import default_resources

DOMAINS = {"ingest": ingest, "regions": regions, "annotation": annotation, "curation": curation,
           "training": training, "serving": serving, "demo": demo}


def _merge() -> dg.Definitions:
    # Resources are defined once here (domain modules must not redefine them).
    return dg.Definitions.merge(*(d.defs for d in DOMAINS.values()), dg.Definitions(resources=default_resources()))


defs = _merge()
