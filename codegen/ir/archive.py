"""Persistence of a :class:`~.graph.Graph`: the ``graph.npz`` archive.

:func:`save_graph` writes ``graph.json`` (the nodes and their scalar fields) and one ``.npy``
member per array, deterministically; :func:`load_graph` reads exactly that format back and
refuses anything else with one line of :class:`~.nodes.IRError`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

from instabnn_hw.strict_json import JSON_SIZE_LIMIT, json_kind, parse_json, short_repr

from . import nodes as _nodes
from .graph import Graph
from .nodes import IRError, Node

__all__ = ["GRAPH_FORMAT", "save_graph", "load_graph"]

#: ``format`` and ``version`` of the header of a saved graph.
GRAPH_FORMAT = ("instabnn-ir", 1)
_HEADER = "graph.json"
_HEADER_KEYS = ("format", "version", "model", "config", "nodes")
_NODE_KEYS = ("class", "name", "inputs", "fields")
#: Every member of the archive gets this date, so the same graph gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _node_classes() -> dict[str, type]:
    return {
        cls.__name__: cls
        for cls in vars(_nodes).values()
        if isinstance(cls, type) and issubclass(cls, Node) and cls is not Node and not cls.__name__.startswith("_")
    }


def _encode(value, key: str, arrays: dict[str, np.ndarray]):
    """JSON for ``value``; arrays go to ``arrays`` under ``key`` (tuples and dicts are tagged)."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"$array": key}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v, f"{key}.{j}", arrays) for j, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{key}.{j}", arrays) for j, v in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise IRError(f"{key}: only dicts with string keys can be saved, not {sorted(map(repr, value))}")
        return {"$dict": {k: _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}}
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no such number; load_graph refuses the NaN / Infinity that json.dumps would write
        raise IRError(f"{key}: cannot save the number {value}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise IRError(f"{key}: cannot save a value of type {type(value).__name__}")


class _Malformed(Exception):
    """A saved graph whose header or members do not fit the format; the message is the reason."""


def _decode(value, arrays: Mapping, used: set[str], where: str):
    """The value :func:`_encode` wrote as ``value``; ``used`` collects the array members it names."""
    if isinstance(value, list):
        return [_decode(v, arrays, used, f"{where}[{j}]") for j, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in ("$array", "$tuple", "$dict"):
        raise _Malformed(f"{where} is {short_repr(value)}, not a tagged $array, $tuple or $dict")
    ((tag, inner),) = value.items()
    if tag == "$array":
        if not isinstance(inner, str) or inner not in arrays:
            raise _Malformed(f"{where} names the array {short_repr(inner)}, which the archive does not hold")
        used.add(inner)
        return arrays[inner]
    if tag == "$tuple":
        if not isinstance(inner, list):
            raise _Malformed(f"{where}: $tuple holds a JSON {json_kind(inner)}, not an array")
        return tuple(_decode(v, arrays, used, f"{where}[{j}]") for j, v in enumerate(inner))
    if not isinstance(inner, dict):
        raise _Malformed(f"{where}: $dict holds a JSON {json_kind(inner)}, not an object")
    return {k: _decode(v, arrays, used, f"{where}.{k}") for k, v in inner.items()}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tuple_of(check, length: int | None = None):
    return lambda v: isinstance(v, tuple) and (length is None or len(v) == length) and all(map(check, v))


#: Per annotation of a node field: (what a saved value must be, whether a decoded value is one).
_FIELD_KINDS = {
    "int": ("an integer", _is_int),
    "int | None": ("an integer or null", lambda v: v is None or _is_int(v)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("a boolean", lambda v: isinstance(v, bool)),
    "np.ndarray": ("an array", lambda v: isinstance(v, np.ndarray)),
    "np.ndarray | None": ("an array or null", lambda v: v is None or isinstance(v, np.ndarray)),
    "tuple[str, ...]": ("a $tuple of strings", _tuple_of(lambda x: isinstance(x, str))),
    "tuple[int, ...]": ("a $tuple of integers", _tuple_of(_is_int)),
    "tuple[int, int]": ("a $tuple of two integers", _tuple_of(_is_int, 2)),
}


def _keys_exactly(record: dict, keys, where: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise _Malformed(f"{where} misses {', '.join(map(repr, missing))}")
    extra = [k for k in record if k not in keys]
    if extra:
        raise _Malformed(f"{where} has unknown fields {', '.join(short_repr(k, 40) for k in extra[:5])}")


def _zip_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def save_graph(graph: Graph, path) -> None:
    """Writes ``graph`` to ``path`` as a ``.npz`` archive: ``graph.json`` (the nodes and their scalar
    fields) and one ``.npy`` member per array; loadable with :func:`load_graph` (and ``numpy.load``).

    Deterministic: the same graph gives the same bytes (fixed member dates and order).
    """
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an ir.Graph, not {type(graph).__name__}")
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for j, node in enumerate(graph.nodes):
        fields = {
            f.name: _encode(getattr(node, f.name), f"n{j}.{f.name}", arrays)
            for f in dataclasses.fields(node)
            if f.name not in ("name", "inputs")
        }
        nodes.append({"class": type(node).__name__, "name": node.name, "inputs": list(node.inputs), "fields": fields})
    header = {
        "format": GRAPH_FORMAT[0],
        "version": GRAPH_FORMAT[1],
        "model": graph.model,
        "config": _encode(dict(graph.config), "config", arrays),
        "nodes": nodes,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        _zip_member(archive, _HEADER, json.dumps(header, indent=1).encode())
        for key, array in arrays.items():
            data = io.BytesIO()
            np.lib.format.write_array(data, np.ascontiguousarray(array), allow_pickle=False)
            _zip_member(archive, f"{key}.npy", data.getvalue())
    with open(os.fspath(path), "wb") as f:
        f.write(buffer.getvalue())


def _read_archive(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and the arrays (by member name without ``.npy``) of the archive ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            members = {info.filename: info for info in infos}
            if len(members) != len(infos):
                raise _Malformed("it holds a member twice")
            if _HEADER not in members:
                raise _Malformed(f"it has no {_HEADER}")
            if members[_HEADER].file_size > JSON_SIZE_LIMIT:
                raise _Malformed(f"its {_HEADER} is larger than {JSON_SIZE_LIMIT // 2**20} MiB")
            try:
                header = parse_json(archive.read(_HEADER))
            except ValueError as exc:
                raise _Malformed(f"its {_HEADER} {exc}") from None
            arrays = {}
            for name in members:
                if name == _HEADER:
                    continue
                if not name.endswith(".npy"):
                    raise _Malformed(f"it holds the member {short_repr(name)}, which is not a .npy array")
                try:
                    arrays[name[: -len(".npy")]] = np.lib.format.read_array(
                        io.BytesIO(archive.read(name)), allow_pickle=False
                    )
                except ValueError as exc:
                    raise _Malformed(f"its member {short_repr(name)} is not a plain .npy array ({exc})") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        # a missing or unreadable file, no zip, a damaged member, a compression or encryption zipfile lacks
        raise _Malformed(str(exc) or type(exc).__name__) from None
    return header, arrays


def _check_header(path: str, header) -> None:
    if not isinstance(header, dict):
        raise _Malformed(f"its {_HEADER} holds a JSON {json_kind(header)}, not an object")
    found = (header.get("format"), header.get("version"))
    if not (found == GRAPH_FORMAT and _is_int(found[1])):
        raise IRError(
            f"{path} holds {short_repr(found[0])} version {short_repr(found[1])}, not "
            f"{GRAPH_FORMAT[0]!r} version {GRAPH_FORMAT[1]}"
        )
    _keys_exactly(header, _HEADER_KEYS, f"its {_HEADER}")
    if not isinstance(header["model"], str):
        raise _Malformed(f"its model is a JSON {json_kind(header['model'])}, not a string")
    if not isinstance(header["nodes"], list):
        raise _Malformed(f"its nodes are a JSON {json_kind(header['nodes'])}, not an array")


def _node_arguments(entry, j: int, classes: dict[str, type], arrays: Mapping, used: set[str]) -> tuple[type, dict]:
    """The node class and the keyword arguments of node ``j``'s header ``entry``, type-checked."""
    where = f"node {j}"
    if not isinstance(entry, dict):
        raise _Malformed(f"{where} is a JSON {json_kind(entry)}, not an object")
    _keys_exactly(entry, _NODE_KEYS, where)
    name, inputs, fields = entry["name"], entry["inputs"], entry["fields"]
    if not isinstance(name, str):
        raise _Malformed(f"{where}: its name is a JSON {json_kind(name)}, not a string")
    where = f"node {short_repr(name)}"
    cls = classes.get(entry["class"]) if isinstance(entry["class"], str) else None
    if cls is None:
        raise _Malformed(f"{where} has the unknown node type {short_repr(entry['class'])}")
    if not (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs)):
        raise _Malformed(f"{where}: its inputs must be an array of names, not {short_repr(inputs)}")
    if not isinstance(fields, dict):
        raise _Malformed(f"{where}: its fields are a JSON {json_kind(fields)}, not an object")
    annotations = {f.name: f.type for f in dataclasses.fields(cls) if f.name not in ("name", "inputs")}
    _keys_exactly(fields, tuple(annotations), f"{where} ({cls.__name__})")
    arguments = {"name": name, "inputs": tuple(inputs)}
    for key, annotation in annotations.items():
        value = _decode(fields[key], arrays, used, f"{where}.{key}")
        kind = _FIELD_KINDS.get(annotation)
        if kind is not None and not kind[1](value):
            shown = f"an array of {value.dtype}" if isinstance(value, np.ndarray) else short_repr(value)
            raise _Malformed(f"{where}: {key} must be {kind[0]}, not {shown}")
        if isinstance(value, np.ndarray) and (value.dtype != np.int64 or value.ndim == 0):
            # save_graph writes the int64 vectors and matrices of the nodes, nothing else
            raise _Malformed(
                f"{where}: {key} must be an int64 vector or matrix, not {value.dtype} of shape {value.shape}"
            )
        arguments[key] = value
    return cls, arguments


def load_graph(path) -> Graph:
    """The graph :func:`save_graph` wrote to ``path`` (node for node, arrays int64 read-only).

    The archive must hold exactly what :func:`save_graph` writes: the header with its fields,
    every node with all the fields of its type, each of its type (integers, strings, int64
    arrays...), and the arrays the header names, no other member.

    Raises
    ------
    IRError
        One line naming the file: when ``path`` is not a saved graph of this format, or when its
        nodes do not make a consistent graph.
    """
    path = os.fspath(path)
    try:
        header, arrays = _read_archive(path)
        _check_header(path, header)
        used: set[str] = set()
        config = _decode(header["config"], arrays, used, "config")
        if not isinstance(config, dict):
            raise _Malformed(f"its config is {short_repr(config)}, not a $dict")
        classes = _node_classes()
        nodes = []
        for j, entry in enumerate(header["nodes"]):
            cls, arguments = _node_arguments(entry, j, classes, arrays, used)
            try:
                nodes.append(cls(**arguments))
            except IRError:
                raise
            except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
                # a combination of fields that the node's own checks do not expect
                raise IRError(f"{arguments['name']}: its fields do not fit its type {cls.__name__} ({exc})") from None
        unused = sorted(set(arrays) - used)
        if unused:
            raise _Malformed(f"it holds arrays no field names: {', '.join(f'{k}.npy' for k in unused[:5])}")
        try:
            return Graph(model=header["model"], config=config, nodes=tuple(nodes))
        except IRError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise IRError(f"its nodes do not make a graph ({exc})") from None
    except _Malformed as exc:
        raise IRError(f"{path} is not a saved IR graph ({' '.join(str(exc).split())})") from None
    except IRError as exc:
        message = " ".join(str(exc).split())  # one line, whatever a value's text holds
        raise IRError(message if message.startswith(path) else f"{path}: {message}") from None
