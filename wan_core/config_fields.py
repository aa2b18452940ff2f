"""Typed reads of fields we do not own: config files (MindSpeed-MM's JSON), where a wrong type is named with
its file and dotted field instead of failing later as "too many values to unpack", and environment variables
(`int_var`, the one reader of every integer a launcher or the user sets)."""
from __future__ import annotations

from wan_core.errors import UserError

_MISSING = object()
NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true/false"}


def get_field(mapping, path: str, expected: type | tuple, source, default=None):
    """mapping[a][b]... for path "a.b"; `default` when absent or null; UserError when not `expected`."""
    value = mapping
    for i, key in enumerate(path.split(".")):
        if not isinstance(value, dict):
            where = ".".join(path.split(".")[:i]) or "the top level"
            raise UserError(f"{source}: {where} must be an object, got {_show(value)}")
        value = value.get(key, _MISSING)
        if value is _MISSING or value is None:
            return default
    kinds = expected if isinstance(expected, tuple) else (expected,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(NAMES.get(k, k.__name__) for k in kinds)
        raise UserError(f"{source}: {path} must be {wanted}, got {_show(value)}")
    return value


def get_int_list(mapping, path: str, length: int, source, default=None):
    """A list of `length` integers (e.g. input_size [frames, height, width])."""
    value = get_field(mapping, path, list, source, default)
    if value is default:
        return default
    if len(value) != length or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{source}: {path} must be a list of {length} integers, got {_show(value)}")
    return value


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def int_var(env, name, default=None):
    """An integer launcher variable; a value that is not an integer is an error, never ignored."""
    value = env.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None
