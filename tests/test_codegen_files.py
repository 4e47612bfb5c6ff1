"""The files the compiler reads back, graph.npz (ir.load_graph) and plan.json (Plan.read): every
malformed file is one line of the loader's ValueError subclass, never another exception."""

from __future__ import annotations

import dataclasses
import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from graphs import tiny_resnet

from instabnn_hw.codegen import ir
from instabnn_hw.codegen.ir.archive import _FIELD_KINDS, _node_classes
from instabnn_hw.codegen.plan import Plan, plan
from instabnn_hw.strict_json import JSON_SIZE_LIMIT


@pytest.fixture(scope="module")
def graph() -> ir.Graph:
    """Every field type there is: convolutions, thresholds with an MLP, INSTA-PReLU, Add shifts, pools."""
    return tiny_resnet(42, insta="th+", prelu="insta")


@pytest.fixture(scope="module")
def graph_members(graph, tmp_path_factory) -> dict[str, bytes]:
    """The members of ``graph`` saved, in archive order."""
    path = tmp_path_factory.mktemp("graph") / "graph.npz"
    ir.save_graph(graph, path)
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_members(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _node(header: dict, name: str) -> dict:
    return next(entry for entry in header["nodes"] if entry["name"] == name)


def _fields(node: str, /, **changes):
    """An edit of the header: the fields of node ``node`` updated with ``changes`` (``...``: deleted)."""

    def edit(header):
        fields = _node(header, node)["fields"]
        for key, value in changes.items():
            if value is ...:
                del fields[key]
            else:
                fields[key] = value

    return edit


def _entry(node: str, /, **changes):
    """An edit of the header: the entry of node ``node`` (class, name, inputs, fields) updated."""

    def edit(header):
        entry = _node(header, node)
        for key, value in changes.items():
            if value is ...:
                del entry[key]
            else:
                entry[key] = value

    return edit


def _top(**changes):
    """An edit of the header: its top-level fields updated (``...``: deleted)."""

    def edit(header):
        for key, value in changes.items():
            if value is ...:
                del header[key]
            else:
                header[key] = value

    return edit


def _member(name: str, data: bytes | None):
    """An edit of the archive: member ``name`` replaced by ``data`` (``None``: removed)."""

    def edit(members):
        if data is None:
            del members[name]
        else:
            members[name] = data

    edit.archive = True
    return edit


#: (edit of the header, or of the archive's members, fragment of the message)
BAD_GRAPHS = {
    # the header as a whole
    "header a JSON list": (_member("graph.json", b"[1, 2]"), "its graph.json holds a JSON array, not an object"),
    "header not JSON": (_member("graph.json", b'{"format": '), "its graph.json is not valid JSON"),
    "header in UTF-16": (_member("graph.json", '{"format": 1}'.encode("utf-16")), "is not UTF-8 text"),
    "header nested deeply": (_member("graph.json", b"[" * 100_000 + b"]" * 100_000), "deeper than 64 levels"),
    "header too large": (
        _member("graph.json", b" " * JSON_SIZE_LIMIT + b"{}"),
        "its graph.json is larger than 16 MiB",
    ),
    "no header": (_member("graph.json", None), "it has no graph.json"),
    "an extra header field": (_top(comment="hello"), "its graph.json has unknown fields 'comment'"),
    "no model": (_top(model=...), "its graph.json misses 'model'"),
    "no nodes": (_top(nodes=...), "its graph.json misses 'nodes'"),
    "another format": (_top(format="onnx"), "holds 'onnx' version 1, not 'instabnn-ir' version 1"),
    "no version": (_top(version=...), "holds 'instabnn-ir' version None, not 'instabnn-ir' version 1"),
    "version true": (_top(version=True), "holds 'instabnn-ir' version True"),
    "version 1.0": (_top(version=1.0), "holds 'instabnn-ir' version 1.0"),
    "model a number": (_top(model=3), "its model is a JSON number, not a string"),
    "nodes an object": (_top(nodes={}), "its nodes are a JSON object, not an array"),
    "config a list": (_top(config=[1]), "its config is [1], not a $dict"),
    "NaN in the config": (_top(config={"$dict": {"lr": float("nan")}}), "holds NaN, which is not a JSON number"),
    "Infinity for a kernel": (_fields("stem.conv", kernel=float("inf")), "holds Infinity, which is not a JSON number"),
    # a node entry
    "a node a list": (lambda h: h["nodes"].__setitem__(1, []), "node 1 is a JSON array, not an object"),
    "a node without fields": (_entry("stem.conv", fields=...), "node 1 misses 'fields'"),
    "a node with an extra key": (_entry("stem.conv", doc="x"), "node 1 has unknown fields 'doc'"),
    "an unknown node type": (_entry("stem.conv", **{"class": "Conv2d"}), "has the unknown node type 'Conv2d'"),
    "a node type a number": (_entry("stem.conv", **{"class": 7}), "has the unknown node type 7"),
    "a private node type": (_entry("stem.conv", **{"class": "_Conv"}), "has the unknown node type '_Conv'"),
    "a node name a number": (_entry("stem.conv", name=12), "node 1: its name is a JSON number, not a string"),
    "inputs a string": (_entry("stem.conv", inputs="input"), "its inputs must be an array of names, not 'input'"),
    "inputs of numbers": (_entry("stem.conv", inputs=[0]), "its inputs must be an array of names, not [0]"),
    "fields a list": (_entry("stem.conv", fields=[]), "its fields are a JSON array, not an object"),
    "inputs of an unknown node": (_entry("stem.conv", inputs=["nosuch"]), "inputs ['nosuch'] are not produced"),
    "two inputs to a convolution": (_entry("stem.conv", inputs=["input", "input"]), "takes 1 input(s)"),
    # the fields of a node
    "an extra field": (_fields("stem.conv", dilation=1), "node 'stem.conv' (IntConv) has unknown fields 'dilation'"),
    "a missing field": (_fields("stem.conv", kernel=...), "node 'stem.conv' (IntConv) misses 'kernel'"),
    "a missing field with a default": (_fields("stem.conv", padding=...), "(IntConv) misses 'padding'"),
    "kernel a string": (_fields("stem.conv", kernel="3"), "node 'stem.conv': kernel must be an integer, not '3'"),
    "kernel a float": (_fields("stem.conv", kernel=3.0), "kernel must be an integer, not 3.0"),
    "kernel a bool": (_fields("stem.conv", kernel=True), "kernel must be an integer, not True"),
    "kernel null": (_fields("stem.conv", kernel=None), "kernel must be an integer, not None"),
    "kernel an array": (_fields("stem.conv", kernel={"$array": "n1.weights"}), "kernel must be an integer, not an"),
    "kernel zero": (_fields("stem.conv", kernel=0), "stem.conv: kernel must be in [1, None], not 0"),
    "kernel too large": (_fields("stem.conv", kernel=5), "weights have 9 columns, but a 5x5 window"),
    "mode a number": (_fields("layer1.sign", mode=1), "mode must be a string, not 1"),
    "mode unknown": (_fields("layer1.sign", mode="th++"), "mode must be one of"),
    "stats a plain list": (_fields("layer1.sign", stats=["m1"]), "stats must be a $tuple of strings, not ['m1']"),
    "stats of numbers": (_fields("layer1.sign", stats={"$tuple": [1]}), "stats must be a $tuple of strings"),
    "hidden_shift a string": (_fields("layer1.sign", hidden_shift="2"), "must be an integer or null, not '2'"),
    "emit_stats a number": (_fields("layer1.sign", emit_stats=1), "emit_stats must be a boolean, not 1"),
    "Add shifts of three": (_fields("layer1.add", shifts={"$tuple": [0, 4, 1]}), "a $tuple of two integers"),
    "weights a number": (_fields("stem.conv", weights=5), "weights must be an array, not 5"),
    "beta where null belongs": (_fields("layer1.sign", beta={"$array": "n1.weights"}), "takes the MLP"),
    "w1 null where an array belongs": (_fields("layer1.act", w1=None), "w1 must be an array, not None"),
    "an unknown tag": (_fields("layer1.sign", stats={"$set": ["m1"]}), "not a tagged $array, $tuple or $dict"),
    "a tag with a second key": (_fields("layer1.sign", stats={"$tuple": ["m1"], "x": 1}), "not a tagged $array"),
    "a $tuple of an object": (_fields("layer1.sign", stats={"$tuple": {}}), "$tuple holds a JSON object"),
    "a $dict of a list": (_top(config={"$dict": []}), "config: $dict holds a JSON array, not an object"),
    "an $array of a number": (_fields("stem.conv", weights={"$array": 3}), "names the array 3, which the archive"),
    "an $array of no member": (_fields("stem.conv", weights={"$array": "nope"}), "names the array 'nope'"),
    # the arrays
    "an array missing": (_member("n1.weights.npy", None), "names the array 'n1.weights', which the archive does not"),
    "an array of floats": (
        _member("n1.weights.npy", _npy(np.zeros((8, 9)))),
        "stem.conv': weights must be an int64 vector or matrix, not float64 of shape (8, 9)",
    ),
    "an array of int32": (_member("n1.weights.npy", _npy(np.zeros((8, 9), np.int32))), "not int32 of shape (8, 9)"),
    "an array of bools": (_member("n1.weights.npy", _npy(np.zeros((8, 9), bool))), "not bool of shape (8, 9)"),
    "an array big-endian": (_member("n1.weights.npy", _npy(np.zeros((8, 9), ">i8"))), "not >i8 of shape (8, 9)"),
    "a scalar array": (_member("n3.alpha.npy", _npy(np.int64(3))), "alpha must be an int64 vector or matrix"),
    "an array of the wrong shape": (
        _member("n1.weights.npy", _npy(np.zeros(72, np.int64))),
        "stem.conv: weights must be a matrix, not of shape (72,)",
    ),
    "an array of the wrong length": (
        _member("n2.mult.npy", _npy(np.ones(3, np.int64))),
        "stem.bn: bias must have shape (3,), not (8,)",
    ),
    "an MLP weight of one dimension": (
        _member("n7.w1.npy", _npy(np.zeros(8, np.int64))),
        "layer1.act: its fields do not fit its type InstaPReLU (tuple index out of range)",
    ),
    "an array of Python objects": (
        _member("n1.weights.npy", _npy(np.array([{}], dtype=object))),
        "its member 'n1.weights.npy' is not a plain .npy array",
    ),
    "an array member of junk": (_member("n1.weights.npy", b"junk"), "'n1.weights.npy' is not a plain .npy array"),
    "a member that is no array": (_member("README.txt", b"hello"), "holds the member 'README.txt', which is not a"),
    "an array no field names": (_member("spare.npy", _npy(np.zeros(2, np.int64))), "arrays no field names: spare.npy"),
}


@pytest.mark.parametrize(("edit", "fragment"), BAD_GRAPHS.values(), ids=BAD_GRAPHS.keys())
def test_a_malformed_graph_file_is_one_line(tmp_path, graph_members, edit, fragment):
    members = dict(graph_members)
    if getattr(edit, "archive", False):
        edit(members)
    else:
        header = json.loads(members["graph.json"])
        edit(header)
        members["graph.json"] = json.dumps(header).encode()
    path = tmp_path / "graph.npz"
    _write_members(path, members)
    with pytest.raises(ir.IRError) as info:
        ir.load_graph(path)
    message = str(info.value)
    assert "\n" not in message and fragment in message and message.startswith(str(path))
    assert len(message) < 300 + len(str(path))


def test_the_unedited_members_load(tmp_path, graph, graph_members):
    """The table's baseline: the members rewritten as they are make the same graph."""
    _write_members(tmp_path / "graph.npz", graph_members)
    loaded = ir.load_graph(tmp_path / "graph.npz")
    assert [type(n) for n in loaded.nodes] == [type(n) for n in graph.nodes] and loaded.types == graph.types


def _duplicate_member(path, members):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name
        _write_members(path, members)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("n1.weights.npy", members["n1.weights.npy"])


def _damaged_deflate(path, members):
    _write_members(path, members)
    data = bytearray(path.read_bytes())
    start = data.index(b"n1.weights.npy") + len("n1.weights.npy")
    data[start : start + 40] = bytes(40)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda path, members: path.write_text("not a zip"), "is not a saved IR graph (File is not a zip file)"),
        (lambda path, members: path.write_bytes(b""), "is not a saved IR graph (File is not a zip file)"),
        (lambda path, members: path.mkdir(), "is not a saved IR graph ([Errno 21] Is a directory"),
        (lambda path, members: None, "is not a saved IR graph ([Errno 2] No such file or directory"),
        (_duplicate_member, "is not a saved IR graph (it holds a member twice)"),
        (_damaged_deflate, "is not a saved IR graph ("),
    ],
    ids=["text", "empty", "folder", "missing", "a member twice", "damaged data"],
)
def test_a_graph_file_that_is_no_archive_is_one_line(tmp_path, graph_members, make, fragment):
    path = tmp_path / "graph.npz"
    make(path, dict(graph_members))
    with pytest.raises(ir.IRError) as info:
        ir.load_graph(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path} {fragment}")


def test_damaged_bytes_anywhere_give_only_the_loaders_error(tmp_path, graph, graph_members):
    """Seeded random damage to every part of a saved graph: it loads as the same graph or fails in one line."""
    _write_members(tmp_path / "graph.npz", graph_members)
    good = (tmp_path / "graph.npz").read_bytes()
    rng = np.random.default_rng(0)
    failures = 0
    for trial in range(300):
        data = bytearray(good)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[position] = int(rng.integers(0, 256))
        if trial % 5 == 0:  # and truncations
            data = data[: int(rng.integers(0, len(data)))]
        path = tmp_path / f"damaged{trial}.npz"
        path.write_bytes(bytes(data))
        try:
            loaded = ir.load_graph(path)
        except ir.IRError as exc:
            assert "\n" not in str(exc)
            failures += 1
        else:
            assert loaded.types == graph.types
        path.unlink()
    assert failures > 100


def _json_paths(value, path=()):
    """The path (keys and indices) of every value inside the parsed JSON ``value``."""
    for key, child in value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ():
        yield (*path, key)
        yield from _json_paths(child, (*path, key))


def _replaced(value, path, replacement):
    """A copy of the parsed JSON ``value`` with the value at ``path`` replaced."""
    copy = json.loads(json.dumps(value))
    inner = copy
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = replacement
    return copy


#: Values of every JSON type, and tagged ones, to put where others belong.
REPLACEMENTS = [None, True, -1, 0, 2.5, "x", [], {}, [1], {"$tuple": []}, {"$array": "n1.weights"}, 10**30]


def test_any_header_value_replaced_gives_only_the_loaders_error(tmp_path, graph, graph_members):
    """Each value of the header (seeded) replaced by one of another type: a graph, or one line of IRError."""
    header = json.loads(graph_members["graph.json"])
    rng = np.random.default_rng(1)
    path = tmp_path / "graph.npz"
    failures = 0
    for where in _json_paths(header):
        replacement = REPLACEMENTS[int(rng.integers(len(REPLACEMENTS)))]
        _write_members(
            path, {**graph_members, "graph.json": json.dumps(_replaced(header, where, replacement)).encode()}
        )
        try:
            ir.load_graph(path)
        except ir.IRError as exc:
            assert "\n" not in str(exc), where
            failures += 1
    assert failures > 100


def test_every_node_field_has_a_checked_type():
    """load_graph checks each field against its annotation: a new annotation needs an entry in its table."""
    for cls in _node_classes().values():
        for f in dataclasses.fields(cls):
            assert f.name in ("name", "inputs") or f.type in _FIELD_KINDS, (cls.__name__, f.name, f.type)


def test_save_refuses_what_json_cannot_hold(tmp_path, graph):
    for value in (float("nan"), float("inf")):
        with pytest.raises(ir.IRError, match=r"config\.lr: cannot save the number"):
            ir.save_graph(dataclasses.replace(graph, config={"lr": value}), tmp_path / "g.npz")


# ---------------------------------------------------------------------------------------------- plan.json


@pytest.fixture(scope="module")
def plan_data(graph) -> dict:
    """plan.json of ``graph`` (with FIFO depths and INSTA parallelism), parsed."""
    return json.loads(plan(graph).to_json())


def _plan_edit(**changes):
    def edit(data):
        for key, value in changes.items():
            if value is ...:
                del data[key]
            else:
                data[key] = value

    return edit


def _in(key: str, name, value):
    def edit(data):
        data[key][name] = value

    return edit


def _depth_row(row):
    def edit(data):
        data["fifo_depths"][0] = row

    return edit


#: (edit of the parsed plan.json, or the file's bytes, fragment of the message)
BAD_PLANS = {
    "a list": (b"[]", "(it holds a JSON array, not an object)"),
    "a string": (b'"plan"', "(it holds a JSON string, not an object)"),
    "not JSON": (b'{"version": ', "(the file is not valid JSON: Expecting value at line 1 column 13)"),
    "empty": (b"", "(the file is not valid JSON"),
    "UTF-16": ('{"version": 1}'.encode("utf-16"), "(the file is not UTF-8 text (byte 0xff at offset 0))"),
    "binary junk": (bytes(range(256)), "(the file is not UTF-8 text (byte 0x80 at offset 128))"),
    "nested deeply": (b"[" * 100_000 + b"]" * 100_000, "(the file nests arrays or objects deeper than 64 levels)"),
    "NaN": (b'{"version": NaN}', "(the file holds NaN, which is not a JSON number)"),
    "a key twice": (b'{"version": 1, "version": 1}', "(the file repeats the key 'version')"),
    "no version": (_plan_edit(version=...), "(version None, not 1)"),
    "version 2": (_plan_edit(version=2), "(version 2, not 1)"),
    "version true": (_plan_edit(version=True), "(version True, not 1)"),
    "a missing key": (_plan_edit(widths=...), "(it misses widths)"),
    "an extra key": (_plan_edit(notes="x"), "(it has unknown keys 'notes')"),
    "folding a list": (_plan_edit(folding=[]), "(folding is a JSON array, not an object of node names)"),
    "a fold of three": (_in("folding", "stem.conv", [8, 1, 1]), "(folding['stem.conv'] must be [PE, SIMD], not"),
    "a fold a number": (_in("folding", "stem.conv", 8), "(folding['stem.conv'] must be [PE, SIMD], not 8)"),
    "PE a string": (_in("folding", "stem.conv", ["8", 1]), "(folding['stem.conv'] PE must be a positive integer"),
    "PE a float": (_in("folding", "stem.conv", [8.0, 1]), "PE must be a positive integer, not 8.0)"),
    "SIMD zero": (_in("folding", "stem.conv", [8, 0]), "(folding['stem.conv'] SIMD must be a positive integer, not 0)"),
    "SIMD a bool": (_in("folding", "stem.conv", [8, True]), "SIMD must be a positive integer, not True)"),
    "a width null": (_in("widths", "stem.conv", None), "(widths['stem.conv'] must be a positive integer, not None)"),
    "a width negative": (_in("widths", "stem.conv", -8), "(widths['stem.conv'] must be a positive integer, not -8)"),
    "widths a number": (_plan_edit(widths=8), "(widths is a JSON number, not an object of node names)"),
    "parallel a float": (_in("parallel", "layer1.sign", 1.5), "(parallel['layer1.sign'] must be a positive integer"),
    "parallel a list": (_plan_edit(parallel=[1]), "(parallel is a JSON array, not an object of node names)"),
    "FIFOs an object": (_plan_edit(fifo_depths={}), "(fifo_depths is a JSON object, not an array)"),
    "a FIFO of two": (_depth_row(["stem.bn", 130]), "(fifo_depths[0] must be [producer, consumer, depth], not"),
    "a FIFO a string": (_depth_row("stem.bn"), "(fifo_depths[0] must be [producer, consumer, depth], not 'stem.bn')"),
    "a FIFO producer a number": (_depth_row([1, "layer1.add", 130]), "(fifo_depths[0] must be [producer, consumer"),
    "a FIFO depth zero": (_depth_row(["stem.bn", "layer1.add", 0]), "(fifo_depths[0] depth must be a positive integer"),
    "a FIFO depth a float": (_depth_row(["stem.bn", "layer1.add", 2.5]), "depth must be a positive integer, not 2.5)"),
    "a FIFO twice": (
        lambda data: data["fifo_depths"].append(data["fifo_depths"][0]),
        "(fifo_depths gives the edge ('layer1.act', 'layer2.pool') twice)",
    ),
}


@pytest.mark.parametrize(("edit", "fragment"), BAD_PLANS.values(), ids=BAD_PLANS.keys())
def test_a_malformed_plan_file_is_one_line(tmp_path, plan_data, edit, fragment):
    path = tmp_path / "plan.json"
    if isinstance(edit, bytes):
        path.write_bytes(edit)
    else:
        data = json.loads(json.dumps(plan_data))
        edit(data)
        path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as info:
        Plan.read(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path} is not a plan.json of version 1 ")
    assert fragment in message and len(message) < 300 + len(str(path))


def test_the_unedited_plan_reads(tmp_path, graph, plan_data):
    """The table's baseline: the file as Plan.to_json writes it reads back as the plan."""
    expected = plan(graph)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan_data))
    saved = Plan.read(path)
    assert (saved.folding, saved.widths, saved.parallel, saved.fifo_depths) == (
        expected.folding,
        expected.widths,
        expected.parallel,
        expected.fifo_depths,
    )


def test_any_plan_value_replaced_gives_only_the_readers_error(tmp_path, plan_data):
    """Every value of plan.json replaced by each of another type: a plan, or one line of ValueError."""
    path = tmp_path / "plan.json"
    for where in _json_paths(plan_data):
        for replacement in REPLACEMENTS:
            path.write_text(json.dumps(_replaced(plan_data, where, replacement)))
            try:
                Plan.read(path)
            except ValueError as exc:
                assert "\n" not in str(exc) and type(exc) is ValueError, (where, replacement)


def _huge_file(path):
    with open(path, "wb") as f:
        f.truncate(JSON_SIZE_LIMIT + 1)  # sparse: no disk space taken


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda path: path.mkdir(), "(cannot read it: Is a directory)"),
        (lambda path: None, "(cannot read it: No such file or directory)"),
        (_huge_file, "(the file is larger than 16 MiB)"),
    ],
    ids=["folder", "missing", "huge"],
)
def test_a_plan_file_that_is_no_readable_file_is_one_line(tmp_path, make, fragment):
    path = tmp_path / "plan.json"
    make(path)
    with pytest.raises(ValueError) as info:
        Plan.read(path)
    assert str(info.value) == f"{path} is not a plan.json of version 1 {fragment}"
