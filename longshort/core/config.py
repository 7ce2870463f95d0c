"""Typed configuration: YAML files + dotted command-line overrides → a validated dataclass tree.

Each stage module owns its section dataclass; `longshort.pipeline.run_config.RunConfig` composes them. This
module is the generic machinery: it checks every key and value against the dataclass types before
any work starts and names the YAML file, line, key path and accepted values when something is off.

Conventions for section dataclasses: `Literal[...]` for choices, `field(metadata={"ge": 0})` (also
"gt", "le", "lt") for ranges, `X | None` for optional values, and an optional ``validate(self)``
raising ``ValueError("field: what is wrong")`` for checks across fields (``validate(self, where)`` also gets a
function that names where a dotted key came from, for checks of nested keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from longshort.core.errors import LongshortError

T = TypeVar("T")
BASE_KEY = "base"  # a YAML file may name another file (relative to itself) whose values it overrides


class _Where:
    """Remembers where each key path came from (file:line or the command line)."""

    def __init__(self) -> None:
        self.origin: dict[str, str] = {}
        self.overrides: dict[str, str] = {}  # key path -> the command-line item that set it

    def __call__(self, path: str) -> str:
        inside = []
        for key, item in self.overrides.items():
            if key == path or path.startswith((key + ".", key + "[")):  # the override replaced the file's value
                return item
            if key.startswith((path + ".", path + "[")):  # it changed something inside this key
                inside.append(item)
        found = self._file(path)
        return f"{found}, changed by the {', '.join(inside)}" if inside else found

    def _file(self, path: str) -> str:
        while path:
            if path in self.origin:
                return self.origin[path]
            path = path.rpartition(".")[0]
        return "<defaults>"


def _yaml_with_lines(path: Path, where: _Where, prefix: str = "") -> dict:
    """Load a YAML mapping and record the line of every key path."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
    except FileNotFoundError:
        raise LongshortError(f"config file {path} does not exist; see ray_configs/ for examples") from None
    except UnicodeDecodeError as e:
        raise LongshortError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise LongshortError(f"{path}: invalid YAML: {e}") from None
    if node is None:  # the code's defaults differ from a recipe's embedded run: an empty file is a mistake
        raise LongshortError(f"{path}: the config file is empty; write the keys to change (they apply on top of the "
                             "code's defaults, which `longshort config show FILE` prints), or give no file to run the "
                             "recipe's embedded default")
    if not isinstance(node, yaml.MappingNode):
        raise LongshortError(f"{path}:{node.start_mark.line + 1}: a config file must be a mapping of keys to values")

    def walk(n: yaml.Node, key_path: str) -> None:
        if isinstance(n, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in n.value:
                sub = f"{key_path}.{k.value}" if key_path else str(k.value)
                line = k.start_mark.line + 1
                if sub in seen:  # YAML keeps the last silently; one of the two is a mistake
                    raise LongshortError(f"{path}:{line}: key '{sub}' is given twice (lines {seen[sub]} and {line}); "
                                         "keep one of them")
                seen[sub] = line
                where.origin[sub] = f"{path}:{line}"
                walk(v, sub)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{key_path}[{i}]")

    walk(node, prefix)
    data = yaml.safe_load(text)
    base = data.pop(BASE_KEY, None)
    if base is not None:
        base_path = (path.parent / str(base)).resolve()
        merged = _yaml_with_lines(base_path, _Where(), prefix)  # lines of this file win below
        child_where = dict(where.origin)
        _yaml_with_lines(base_path, where, prefix)
        where.origin.update(child_where)
        data = deep_merge(merged, data)
    return data


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str], where: _Where) -> dict:
    """`a.b.c=value` strings → a nested dict (values parsed as YAML scalars/lists)."""
    out: dict = {}
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise LongshortError(f"override {item!r} is not of the form key.path=value (e.g. sft.long.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise LongshortError(f"override {item!r}: value is not valid YAML: {e}") from None
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise LongshortError(f"override {item!r} conflicts with another override of {p!r}")
        node[parts[-1]] = value
        where.origin[key.strip()] = where.overrides[key.strip()] = f"command line ({item})"
    return out


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}" if get_args(tp) else "a list"
    if origin is dict:
        return f"a mapping of str to {_type_name(get_args(tp)[1])}" if get_args(tp) else "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping (section {tp.__name__})"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(value: Any, tp: Any, key: str, where: _Where) -> Any:
    def bad(expected: str) -> LongshortError:
        return LongshortError(f"{where(key)}: key '{key}' is {value!r}, expected {expected}")

    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, where)
            except LongshortError as e:
                errors.append(e)
        if len(errors) == 1 and (value is not None):  # X | None: X's own message names the inner key
            raise errors[0]
        raise bad(_type_name(tp))
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise bad(_type_name(tp))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad(_type_name(tp))
        return build(tp, value, key, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise bad(_type_name(tp))
        (item_tp,) = get_args(tp)[:1] or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise bad(_type_name(tp))
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _convert(v, val_tp, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad("true/false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    raise bad(_type_name(tp))


_RANGE = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"), "le": (lambda v, b: v <= b, "<="),
          "lt": (lambda v, b: v < b, "<")}


def build(cls: type[T], data: dict, prefix: str = "", where: _Where | None = None) -> T:
    """Build dataclass ``cls`` from a nested dict, checking keys, types, ranges and ``validate()``."""
    where = where or _Where()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get(CONFIG_KEY)}
    keyed = [f.name for f in dataclasses.fields(cls) if f.metadata.get(CONFIG_KEY)]
    data = _renamed(cls, data, prefix, where)
    for key in data:
        if key not in fields:
            path = f"{prefix}.{key}" if prefix else str(key)
            # a key that extends an accepted one ("lrate": lr) first, else the closest spelling
            close = ([f for f in fields if len(f) > 1 and str(key).startswith(f)][-1:]
                     or difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5))
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise LongshortError(
                f"{where(path)}: unknown key '{path}'{hint}; accepted keys in "
                f"'{prefix or '<top level>'}': {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = f"{prefix}.{name}" if prefix else name
        raw = data[name]
        if dataclasses.is_dataclass(hints[name]) and isinstance(raw, dict) and f.default_factory is not dataclasses.MISSING:
            # A partial section overrides its owner's defaults (e.g. bootstrap's tuned SFT settings), not the
            # section class's generic ones.
            raw = deep_merge(to_dict(f.default_factory()), raw)
        value = _convert(raw, hints[name], path, where)
        for bound_key, (ok, sym) in _RANGE.items():
            if bound_key in f.metadata and value is not None and not ok(value, f.metadata[bound_key]):
                raise LongshortError(f"{where(path)}: key '{path}' is {value!r}, must be {sym} {f.metadata[bound_key]}")
        kwargs[name] = value
    kwargs.update(dict.fromkeys(keyed, prefix))
    try:
        obj = cls(**kwargs)
        if hasattr(obj, "validate"):
            if "where" in inspect.signature(obj.validate).parameters:  # a check that names a nested key's origin
                obj.validate(where=lambda key: where(f"{prefix}.{key}" if prefix else key))
            else:
                obj.validate()
    except (ValueError, TypeError) as e:
        if isinstance(e, LongshortError):
            raise
        field_name, _, msg = str(e).partition(":")
        path = f"{prefix}.{field_name.strip()}" if prefix else field_name.strip()
        if field_name.strip() in fields and msg:
            raise LongshortError(f"{where(path)}: key '{path}': {msg.strip()}") from None
        raise LongshortError(f"{where(prefix)}: section '{prefix or '<top level>'}': {e}") from None
    return obj


def _renamed(cls: type, data: dict, prefix: str, where: _Where) -> dict:
    """Old key names a section still reads (class attribute ``RENAMED_KEYS = {old: new}``), with a warning."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    if not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        old_path, new_path = (f"{prefix}.{k}" if prefix else k for k in (old, new))
        moved = [k for k in where.origin if k == old_path or k.startswith(old_path + ".")]
        origin = where.origin[moved[0]] if moved else where(old_path)
        value = data.pop(old)
        both = isinstance(data.get(new), dict) and isinstance(value, dict)
        data[new] = deep_merge(data[new], value) if both else value  # a file's new key + an old-named override
        for key in moved:
            where.origin[new_path + key[len(old_path):]] = where.origin[key]
        logging.getLogger("longshort").warning("%s: key '%s' is now called '%s'; rename it", origin, old_path, new_path)
    return data


def load(cls: type[T] | Callable[[dict, Callable[[str], str]], type[T]], path: str | Path | None = None,
         overrides: list[str] | None = None) -> T:
    """Load ``cls`` from an optional YAML file plus dotted overrides (which win). ``cls`` may also be a function
    ``(raw data, where) -> class`` that picks the class from the data (the run config's ``recipe`` key)."""
    where = _Where()
    data = _yaml_with_lines(Path(path), where) if path else {}
    data = deep_merge(data, parse_overrides(list(overrides or []), where))
    if not isinstance(cls, type):
        cls = cls(data, where)
    return build(cls, data, "", where)


# Field metadata of a knob that decides where and how fast a stage runs, not what it produces (workers, batch
# sizes, progress bars): stage fingerprints leave it out, so changing it does not rerun finished stages.
PLACEMENT = "placement"
# Field metadata of the dotted key a section was loaded from (``chunk.source``), which ``build`` fills in so its
# messages can name the full key of a fix; never read from YAML, printed or fingerprinted.
CONFIG_KEY = "config_key"


def to_dict(obj: Any, *, results_only: bool = False) -> Any:
    """Plain data of a config tree; ``results_only`` drops the fields marked ``PLACEMENT``."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name), results_only=results_only) for f in dataclasses.fields(obj)
                if not (results_only and f.metadata.get(PLACEMENT)) and not f.metadata.get(CONFIG_KEY)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, results_only=results_only) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v, results_only=results_only) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)
