"""Strict JSON for the files users hand over (fold configs, plan.json, manifests, a graph's header).

:func:`read_json` refuses a file too large before reading it whole; :func:`parse_json` refuses
what the files of this package never hold (text that is not UTF-8, ``NaN``, a key twice, deep
nesting), each with one line that completes a sentence about the file. :func:`short_repr` and
:func:`printable_name` quote what such a file holds in those lines.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = [
    "JSON_DEPTH_LIMIT",
    "JSON_SIZE_LIMIT",
    "json_kind",
    "parse_json",
    "printable_name",
    "printable_names",
    "read_json",
    "short_repr",
]

#: The most bytes :func:`read_json` reads (a fold config, a plan.json) and a saved graph's header may hold.
JSON_SIZE_LIMIT = 16 * 2**20
#: The deepest nesting of arrays and objects :func:`parse_json` accepts (the files of this package
#: nest a few levels; the limit keeps every recursive reader of the result within Python's stack).
JSON_DEPTH_LIMIT = 64


class _Refused(ValueError):
    """JSON that parses but that the files of this package never hold."""


def _refuse_constant(name: str):
    raise _Refused(f"holds {name}, which is not a JSON number")


def _unique_keys(pairs: list) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise _Refused(f"repeats the key {short_repr(key)}")
        result[key] = value
    return result


def _nesting_within(value, limit: int) -> bool:
    """Whether ``value`` nests arrays and objects at most ``limit`` levels deep (without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (a ``...`` at the cut): for one-line messages."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python converts
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable_name(name) -> str:
    """A layer name for a one-line message: as it is when printable and short, else its shortened repr."""
    return name if isinstance(name, str) and name.isprintable() and 0 < len(name) <= 60 else short_repr(name)


def printable_names(names: list, shown: int = 5) -> str:
    """The first ``shown`` of ``names`` (:func:`printable_name`) and how many more there are."""
    text = ", ".join(printable_name(name) for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def json_kind(value) -> str:
    """The JSON name of the type of a parsed ``value``: ``"object"``, ``"array"``, ``"string"``..."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def parse_json(data: bytes | str):
    """The JSON value in ``data``, read strictly: UTF-8 (a leading byte-order mark allowed), no
    ``NaN`` / ``Infinity``, no key twice in one object, at most :data:`JSON_DEPTH_LIMIT` levels.

    Raises
    ------
    ValueError
        One line that completes a sentence about the file: ``"is not UTF-8 text (...)"``,
        ``"is not valid JSON: ..."``, ``"repeats the key 'PE'"``...
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    try:
        value = json.loads(data, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except _Refused as exc:
        raise ValueError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"nests arrays or objects deeper than {JSON_DEPTH_LIMIT} levels") from None
    except ValueError:  # the one other refusal of json.loads: integers too long to convert
        raise ValueError(f"holds a number of more than {sys.get_int_max_str_digits()} digits") from None
    if not _nesting_within(value, JSON_DEPTH_LIMIT):
        raise ValueError(f"nests arrays or objects deeper than {JSON_DEPTH_LIMIT} levels")
    return value


def read_json(path, *, limit: int = JSON_SIZE_LIMIT):
    """The JSON value in the file ``path`` (:func:`parse_json`), refusing files of over ``limit`` bytes
    before reading them whole.

    Raises
    ------
    OSError
        When the file cannot be read (missing, a folder, no permission).
    ValueError
        One line completing a sentence about the file (see :func:`parse_json`), or ``"is larger than ..."``.
    """
    with open(os.fspath(path), "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is larger than {_size(limit)}")
    return parse_json(data)


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit:,} bytes"
