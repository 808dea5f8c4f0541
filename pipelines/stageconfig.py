"""One declaration per stage setting: a field of the stage's plain dataclass config, with its
help text in the field's metadata (`field(default=..., metadata={"help": "..."})`). The `sfr`
flags and the Dagster run config are generated from those fields, so a setting, its default
and its help are written once.

    add_arguments(parser, IngestConfig, ["max_pixels", "chunk_size"])   # --max-pixels, --chunk-size
    cfg = from_arguments(IngestConfig, args, ["max_pixels", "chunk_size"])
    IngestRunConfig = dagster_config(IngestConfig, ["max_pixels", "chunk_size"], "IngestRunConfig")

Only fields of type int, float, str or bool are generated (others stay hand-written: they need
a parser); a flag not given on the command line leaves the dataclass default.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence

SIMPLE_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _fields(cls: type, names: Sequence[str]) -> list[dataclasses.Field]:
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"{cls.__name__} has no field(s) {missing}; fields: {sorted(by_name)}")
    out = [by_name[n] for n in names]
    for f in out:
        if _type(f) is None:
            raise TypeError(f"{cls.__name__}.{f.name}: type {_type_name(f)!r} is not one of {sorted(SIMPLE_TYPES)}; "
                            "declare that setting by hand")
        if not help_of(f):
            raise ValueError(f"{cls.__name__}.{f.name} has no help text: add metadata={{'help': ...}}")
    return out


def _type_name(f: dataclasses.Field) -> str:
    """'int' for `x: int` with or without `from __future__ import annotations` (a string then)."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))


def _type(f: dataclasses.Field) -> type | None:
    return SIMPLE_TYPES.get(_type_name(f))


def help_of(f: dataclasses.Field) -> str:
    """The help text a field declares in its metadata ('' when none)."""
    return str(f.metadata.get("help", ""))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{f.name} has no default; a generated setting needs one")


def add_arguments(parser: argparse.ArgumentParser, cls: type, names: Sequence[str]) -> None:
    """Add `--field-name` flags for these fields of dataclass `cls` (bool: --flag / --no-flag).
    The parsed value is None when a flag is not given (from_arguments keeps the default)."""
    for f in _fields(cls, names):
        flag = "--" + f.name.replace("_", "-")
        text = f"{help_of(f)} (default: {_default(f)})"
        if _type(f) is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=_type(f), default=None, metavar=f.name.upper(), help=text)


def from_arguments(cls: type, args: argparse.Namespace, names: Sequence[str], **extra: Any) -> Any:
    """An instance of `cls`: the flags given on the command line, `extra` fields, and defaults."""
    given = {f.name: getattr(args, f.name) for f in _fields(cls, names) if getattr(args, f.name, None) is not None}
    return cls(**given, **extra)


def dagster_config(cls: type, names: Sequence[str], name: str, base: type | None = None) -> type:
    """A `dagster.Config` class named `name` whose fields are these fields of `cls`, with the
    same defaults and their help as descriptions (shown in the Dagster UI). Subclass it to add
    hand-written fields or methods; `to_dataclass(config, cls, names)` builds the plain config."""
    import dagster as dg
    from pydantic import Field, create_model

    fields = {f.name: (_type(f), Field(default=_default(f), description=help_of(f))) for f in _fields(cls, names)}
    return create_model(name, __base__=base or dg.Config, __module__=cls.__module__, **fields)


def to_dataclass(config: Any, cls: type, names: Sequence[str], **extra: Any) -> Any:
    """The plain dataclass config from a generated Dagster config (plus `extra` fields)."""
    return cls(**{n: getattr(config, n) for n in names}, **extra)
