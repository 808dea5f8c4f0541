"""One declaration per setting: a stage's CLI flags and its Dagster run config are built from
the stage's config dataclass.

The dataclasses stay plain, in their own packages (`warehouse.ingest.IngestConfig`,
`sfreward.regions.ProposerConfig`, ...); each field that a user can set carries its help text
in `field(metadata={"help": ...})` (optionally `"choices"` and `"metavar"`). Only the two
surfaces that consume them live here, in the top layer:

- `Flags` adds argparse flags for chosen fields (type, default, choices and help from the
  dataclass) and reads the parsed values back into field values or an instance. Flag names
  that predate this module are kept through an explicit `names` map; a flag in other units
  than its field (MiB for bytes) through `units`.
- `dagster_config` builds a `dg.Config` subclass with the same field names, defaults and
  descriptions; `from_dagster` turns a run's config back into the dataclass.

Type mapping: bool -> `--x/--no-x` (argparse.BooleanOptionalAction); `T | None` -> a flag
whose absence means None, and an Optional Dagster field; list[T] -> a repeatable flag
(`action="append"`); tuple[T, ...] -> `nargs` values on the CLI and list[T] in Dagster (the
Dagster config system has no tuples); dict[str, str] -> Dagster only.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import dagster as dg
import pydantic

SCALARS = (bool, int, float, str)
_UNSET = object()


# ------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class _Shape:
    """What a field's annotation means to the two surfaces."""

    kind: str                 # 'scalar' | 'list' | 'tuple' | 'dict'
    elem: type                # the scalar type (of the elements, for list/tuple/dict values)
    optional: bool            # `T | None`
    length: int | None = None  # tuple[T, T, T] -> 3; tuple[T, ...] -> None


def _shape(cls: type, name: str) -> _Shape:
    _field(cls, name)   # a clear error for a name that is not a field
    hint = typing.get_type_hints(cls)[name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}.{name}: union {hint} is not supported (only `T | None`)")
        hint, optional = args[0], True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in SCALARS:
        return _Shape("scalar", hint, optional)
    if origin is list and len(args) == 1 and args[0] in SCALARS:
        return _Shape("list", args[0], optional)
    if origin is tuple and args and all(a in SCALARS for a in args if a is not Ellipsis):
        if len(args) == 2 and args[1] is Ellipsis:
            return _Shape("tuple", args[0], optional)
        if len(set(args)) == 1:
            return _Shape("tuple", args[0], optional, len(args))
    if origin is dict and args == (str, str):
        return _Shape("dict", str, optional)
    raise TypeError(f"{cls.__name__}.{name}: type {hint} has no CLI/Dagster form (use a scalar, "
                    "list[T], tuple[T, ...] or dict[str, str] field, or leave it out of the surface)")


def _field(cls: type, name: str) -> dataclasses.Field:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    if name not in by_name:
        raise KeyError(f"{cls.__name__} has no field {name!r} (fields: {', '.join(by_name)})")
    return by_name[name]


def default_of(cls: type, name: str) -> Any:
    """The dataclass default of a field (a fresh copy for default_factory fields)."""
    f = _field(cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default; it cannot be an optional setting")


def help_of(cls: type, name: str) -> str:
    """The field's help text; every field on a surface must have one."""
    text = _field(cls, name).metadata.get("help")
    if not text:
        raise ValueError(f"{cls.__name__}.{name} has no help text: declare it with "
                         'field(..., metadata={"help": "..."})')
    return text


def documented_fields(cls: type) -> tuple[str, ...]:
    """The fields of `cls` that carry help text, in declaration order: the settings a stage
    offers its users, for surfaces that expose all of them."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("help"))


# --------------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class Flags:
    """Argparse flags for `fields` of the dataclass `cls`.

    names: field -> flag name without dashes, where it is not the field name with '-' for '_'.
    defaults: field -> flag default, where the CLI's differs from the dataclass's; None means
        "not given" (the value then comes from elsewhere: a JSON file, the model card, ...).
    units: field -> (factor, unit): the flag is a float in `unit` and field = flag * factor
        (e.g. (1 << 20, "MiB") for a field in bytes).
    notes: field -> text appended to the field's help on this command line only (where its
        default comes from, for instance).
    """

    cls: type
    fields: tuple[str, ...]
    names: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    units: Mapping[str, tuple[float, str]] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for extra in (self.names, self.defaults, self.units, self.notes):
            for name in extra:
                if name not in self.fields:
                    raise KeyError(f"Flags({self.cls.__name__}): {name!r} is not one of the chosen fields")
        for name in self.fields:
            # Fail when the parser is built, not when a user passes the flag.
            if _shape(self.cls, name).kind == "list" and name in self.defaults:
                raise ValueError(f"Flags({self.cls.__name__}): {name} is a list flag; it has no default of "
                                 "its own (not given: the dataclass default; given: exactly the values given)")
            help_of(self.cls, name)

    def flag(self, name: str) -> str:
        """The flag that sets field `name`, e.g. '--max-batch' (for error messages)."""
        return "--" + self.names.get(name, name.replace("_", "-"))

    def dest(self, name: str) -> str:
        return self.flag(name)[2:].replace("-", "_")

    def default(self, name: str) -> Any:
        if name in self.defaults:
            return self.defaults[name]
        value = default_of(self.cls, name)
        if name in self.units and value is not None:
            return value / self.units[name][0]
        return value

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        for name in self.fields:
            self._add(parser, name)

    def _add(self, parser, name: str) -> None:
        shape, meta = _shape(self.cls, name), _field(self.cls, name).metadata
        default = self.default(name)
        text = help_of(self.cls, name).replace("%", "%%")   # argparse formats help with %
        kw: dict[str, Any] = {"default": default, "dest": self.dest(name)}
        if "choices" in meta:
            kw["choices"] = tuple(meta["choices"])
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        if name in self.units:
            text += f" ({self.units[name][1]})"
        if name in self.notes:
            text += "; " + self.notes[name].replace("%", "%%")
        if shape.kind == "scalar" and shape.elem is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif shape.kind == "scalar":
            kw["type"] = float if name in self.units else shape.elem
        elif shape.kind == "list":
            # argparse's append would add to a non-empty default; None keeps the dataclass's.
            kw.update(action="append", type=shape.elem, default=None)
            text += " (repeatable)"
        elif shape.kind == "tuple":
            kw.update(type=shape.elem, nargs=shape.length or "+")
        else:
            raise TypeError(f"{self.cls.__name__}.{name}: a {shape.kind} field has no CLI form")
        if default is not None and not (shape.kind == "scalar" and shape.elem is bool) and shape.kind != "list":
            text += " (default: %(default)s)"
        parser.add_argument(self.flag(name), help=text, **kw)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """Field values from parsed args, in the field's units and types; flags left at a None
        default are left out (not given)."""
        out: dict[str, Any] = {}
        for name in self.fields:
            v = getattr(args, self.dest(name))
            if v is None:
                continue
            shape = _shape(self.cls, name)
            if name in self.units:
                v = v * self.units[name][0]
                v = int(v) if shape.elem is int else v
            elif shape.kind == "tuple":
                v = tuple(v)
            elif shape.kind == "list":
                v = list(v)
            out[name] = v
        return out

    def build(self, args: argparse.Namespace, **extra: Any) -> Any:
        """The dataclass from parsed args; `extra` sets the fields the flags do not cover."""
        return self.cls(**{**self.values(args), **extra})


# ------------------------------------------------------------------------------------ Dagster
def _dagster_type(shape: _Shape) -> Any:
    base = {"scalar": shape.elem, "list": list[shape.elem], "tuple": list[shape.elem],
            "dict": dict[str, str]}[shape.kind]
    return Optional[base] if shape.optional else base


def dagster_config(cls: type, fields: tuple[str, ...] | list[str], *,
                   defaults: Mapping[str, Any] | None = None, name: str | None = None) -> type[dg.Config]:
    """A `dg.Config` subclass whose fields are `fields` of the dataclass `cls`: same names, same
    defaults (or `defaults[field]` where the run config's must differ), the help text as the
    field description (shown in the Dagster UI's launchpad). Subclass it to add methods or
    run-only fields."""
    defaults = dict(defaults or {})
    unknown = set(defaults) - set(fields)
    if unknown:
        raise KeyError(f"dagster_config({cls.__name__}): defaults for fields not chosen: {sorted(unknown)}")
    spec: dict[str, Any] = {}
    for f in fields:
        shape = _shape(cls, f)
        default = defaults[f] if f in defaults else default_of(cls, f)
        if shape.kind == "tuple" and default is not None:
            default = list(default)
        spec[f] = (_dagster_type(shape), pydantic.Field(default=default, description=help_of(cls, f)))
    model = pydantic.create_model(name or f"{cls.__name__}Fields", __base__=dg.Config, **spec)
    model.__doc__ = f"Run config from the fields of {cls.__module__}.{cls.__qualname__}."
    return model


def dagster_values(cls: type, config: dg.Config) -> dict[str, Any]:
    """The dataclass fields a Dagster config carries (run-only fields of a subclass are left
    out), converted back to the dataclass's types (lists to tuples where it wants tuples)."""
    out: dict[str, Any] = {}
    dc_fields = {f.name for f in dataclasses.fields(cls)}
    for name in type(config).model_fields:
        if name not in dc_fields:
            continue
        v = getattr(config, name)
        if v is not None:
            shape = _shape(cls, name)
            if shape.kind == "tuple":
                v = tuple(v)
            elif shape.kind in ("list", "dict"):
                v = type(v)(v)
        out[name] = v
    return out


def from_dagster(cls: type, config: dg.Config, **extra: Any) -> Any:
    """The dataclass from a Dagster run's config; `extra` sets or overrides fields."""
    return cls(**{**dagster_values(cls, config), **extra})
