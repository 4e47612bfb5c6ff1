"""`instabnn-hw generate` writes the same bytes wherever the package is installed, and whatever
the number of torch threads.

The package is copied twice into the layout of an installed one (``instabnn_hw/``, with ``quant/``,
``codegen/``, ``hw/`` and ``sim/`` as its subpackages) and each copy generates the same design in a
fresh interpreter that imports it and nothing else of this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

import instabnn_hw
from instabnn_hw.codegen.ir import save_graph
from instabnn_hw.codegen.lower import lower, random_model

#: The checkout: the folder of the top-level package and its subpackages (pyproject.toml's package-dir).
ROOT = Path(instabnn_hw.__file__).resolve().parents[1]
SUBPACKAGES = ("quant", "codegen", "hw", "sim")

#: A small design with every kind of file: INSTA units, residual FIFOs, XNOR popcounts, weight memories.
OPTIONS = ["--model", "resnet-tiny", "--input-size", "8", "--width", "4", "--insta", "th", "--fps", "1000"]

#: The child: drop the editable install's finders (they map the package to this checkout), import the
#: copy, check that every module of the package came from it, and generate.
CHILD = """
import sys
copy, out, options = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, "__module__", "").startswith("__editable__")]
sys.path_importer_cache.clear()
sys.path.insert(0, copy)
import instabnn_hw.cli

status = instabnn_hw.cli.main(["generate", *options, "--out", out, "--no-progress"])
outside = sorted(
    name
    for name, module in sys.modules.items()
    if name.split(".")[0] == "instabnn_hw" and not (getattr(module, "__file__", None) or "").startswith(copy)
)
assert not outside, f"modules imported from outside {copy}: {outside}"
import instabnn_hw.codegen

assert instabnn_hw.codegen.__file__.startswith(copy), instabnn_hw.codegen.__file__
sys.exit(status)
"""


def _install_copy(target: Path) -> Path:
    """The package laid out as installed under ``target``; returns ``target``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = target / "instabnn_hw"
    shutil.copytree(ROOT / "instabnn_hw", package, ignore=ignore)
    for name in SUBPACKAGES:
        shutil.copytree(ROOT / name, package / name, ignore=ignore)
    return target


def _generate(copy: Path, out: Path, work: Path) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(copy) + os.sep, str(out), *OPTIONS],
        cwd=work,  # not the checkout: its instabnn_hw/ folder would be importable from the current folder
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_gives_the_same_bytes_from_two_installs(tmp_path):
    outputs = []
    for name in ("a", "b"):
        copy = _install_copy(tmp_path / f"site-{name}")
        work = tmp_path / f"work-{name}"
        work.mkdir()
        _generate(copy, tmp_path / f"design-{name}", work)
        outputs.append(_files(tmp_path / f"design-{name}"))
    a, b = outputs
    assert sorted(a) == sorted(b)
    expected = {"manifest.json", "folding.json", "graph.npz", "plan.json", "report.md", "cycles.png"}
    assert expected <= set(a) and "rtl/instabnn_top.v" in a and any(name.startswith("rtl/mem/") for name in a)
    for name in a:
        assert a[name] == b[name], f"{name} differs between the two installs"
    for name, data in a.items():
        # no install's path, and no source-location attributes (they would name one)
        for folder in (tmp_path, ROOT):
            assert str(folder).encode() not in data, (name, folder)
        if name.endswith(".v"):
            assert b"src =" not in data, name


def test_a_random_model_lowers_to_the_same_graph_whatever_the_thread_count(tmp_path):
    # ResNet-18's float32 calibration once gave other thresholds on one thread than on two
    threads = torch.get_num_threads()
    archives = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            path = tmp_path / f"graph-{count}.npz"
            save_graph(lower(random_model("resnet18", width=8, input_size=32)), path)
            archives.append(path.read_bytes())
    finally:
        torch.set_num_threads(threads)
    assert archives[0] == archives[1]
