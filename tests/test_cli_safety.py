"""The command line never destroys a user's files, and ends cleanly on Ctrl-C, SIGTERM and SIGKILL.

Every case checks the exit status, the one line on stderr, and the file system before and after:
nothing the user had is lost, nothing is left behind.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_errors import fails_with_one_line

from instabnn_hw.cli import main
from instabnn_hw.files import STAGING_SUFFIX

INSTABNN_HW = Path(sys.executable).parent / "instabnn-hw"
SMALL = ["--model", "resnet-tiny", "--input-size", "8", "--width", "4", "--no-progress"]
#: A model whose Verilog takes long enough to write that a signal lands in the middle of it.
SLOW = ["--model", "resnet18", "--input-size", "64", "--width", "16", "--no-progress"]


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` (hidden ones too, links not followed) with its bytes or link target."""
    entries: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[key] = "folder"
            else:
                entries[key] = path.read_bytes()
    return entries


@pytest.fixture(scope="module")
def design(tmp_path_factory) -> Path:
    """A small design that generate wrote."""
    out = tmp_path_factory.mktemp("design") / "d"
    assert main(["generate", *SMALL, "--out", str(out)]) == 0
    return out


def _user_folder(place: Path) -> Path:
    folder = place / "userdir"
    folder.mkdir()
    (folder / "precious.txt").write_text("mine")
    return folder


def _design_with_notes(place: Path, design: Path) -> Path:
    import shutil

    copy = place / "noted"
    shutil.copytree(design, copy)
    (copy / "notes.txt").write_text("my notes")
    return copy


# case: (how the place is prepared -> the --out argument, the message)
GENERATE_OUT = {
    "a folder of the user's": (lambda place, design: _user_folder(place), "exists and is not a design folder"),
    "the current folder": (lambda place, design: ".", "is the current folder"),
    "an empty path": (lambda place, design: "", "give a folder name"),
    "a folder that holds the current folder": (lambda place, design: "..", "holds the current folder"),
    "the root folder": (lambda place, design: "/", "is the root folder"),
    "the home folder": (lambda place, design: os.environ["HOME"], "is your home folder"),
    "a link to a folder": (
        lambda place, design: (place / "link").symlink_to(_user_folder(place)) or place / "link",
        "is a symbolic link",
    ),
    "a file": (lambda place, design: (place / "f").write_text("x") and place / "f", "is a file"),
    "under a file": (lambda place, design: (place / "f").write_text("x") and place / "f" / "d", "is a file"),
    "an unwritable place": (lambda place, design: "/proc/instabnn-design", "cannot write in /proc"),
    "a design holding the user's notes": (_design_with_notes, "holds files generate did not write (notes.txt)"),
}


@pytest.mark.parametrize("prepare, message", GENERATE_OUT.values(), ids=GENERATE_OUT.keys())
def test_generate_refuses_an_out_it_must_not_replace(tmp_path, monkeypatch, capsys, design, prepare, message):
    place = tmp_path / "place"
    place.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(place)
    out = str(prepare(place, design))
    before = snapshot(tmp_path)
    fails_with_one_line(capsys, ["generate", *SMALL, "--out", out], message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("out", [".", "", "/", ".."])
def test_force_never_replaces_a_protected_folder(tmp_path, monkeypatch, capsys, out):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precious.txt").write_text("mine")
    before = snapshot(tmp_path)
    fails_with_one_line(capsys, ["generate", *SMALL, "--force", "--out", out], "--out")
    assert snapshot(tmp_path) == before


def test_force_replaces_a_folder_that_is_not_a_design(tmp_path, capsys):
    folder = _user_folder(tmp_path)
    assert main(["generate", *SMALL, "--force", "--out", str(folder)]) == 0
    assert not (folder / "precious.txt").exists() and (folder / "manifest.json").is_file()
    assert "removed with it: precious.txt" in capsys.readouterr().out


def test_regenerating_replaces_the_design_and_its_builds_and_says_so(tmp_path, capsys, design):
    import shutil

    out = tmp_path / "again"
    shutil.copytree(design, out)
    (out / "sim" / "verilator").mkdir(parents=True)
    (out / "rtl" / "stale.v").write_text("module stale; endmodule\n")
    assert main(["generate", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"replaced the previous {out}; removed with it: sim/" in printed
    assert not (out / "sim").exists() and not (out / "rtl" / "stale.v").exists()
    assert snapshot(out) == snapshot(design), "a regenerated design holds exactly what a new one does"
    assert [p.name for p in tmp_path.iterdir()] == ["again"], "no staging folder is left"


def test_an_empty_folder_is_a_fine_out(tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["generate", *SMALL, "--out", str(tmp_path / "empty")]) == 0


def test_two_threads_check_one_parent_under_names_of_their_own(tmp_path, monkeypatch):
    """Threads of one process (bench/hardware.py --jobs 2) probe one parent at once: each under its own name."""
    from instabnn_hw import files

    probes, real_open = [], os.open

    def recording_open(path, *args):
        probes.append(Path(path).name)
        return real_open(path, *args)

    monkeypatch.setattr(files.os, "open", recording_open)

    def check(name):
        files.check_output_folder(tmp_path / name, label=f"--out {name}", owner=lambda path: None)

    workers = [threading.Thread(target=check, args=(name,)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
        worker.join()
    assert len(probes) == 2 and probes[0] != probes[1]
    assert not list(tmp_path.iterdir())


JSON_OUT = {
    "eval --json naming a folder": (
        ["eval", "{checkpoint}", "--dataset", "fashion-mnist", "--json", "{place}"],
        "is a folder",
    ),
    "eval --json in a missing folder": (
        ["eval", "{checkpoint}", "--dataset", "fashion-mnist", "--json", "{place}/no/r.json"],
        "does not exist",
    ),
    "eval --json in an unwritable place": (
        ["eval", "{checkpoint}", "--dataset", "fashion-mnist", "--json", "/proc/r.json"],
        "cannot write in /proc",
    ),
    "eval --json empty": (["eval", "{checkpoint}", "--dataset", "fashion-mnist", "--json", ""], "give a file name"),
    "simulate --json naming a folder": (["simulate", "{design}", "--json", "{place}"], "is a folder"),
    "simulate --json in a missing folder": (["simulate", "{design}", "--json", "{place}/no/r.json"], "does not exist"),
    "simulate --json empty": (["simulate", "{design}", "--json", ""], "give a file name"),
}


@pytest.mark.parametrize("argv, message", JSON_OUT.values(), ids=JSON_OUT.keys())
def test_records_files_are_checked_before_any_work(tmp_path, capsys, design, argv, message):
    from instabnn_hw.quant.checkpoint import shipped_checkpoints

    checkpoint = shipped_checkpoints()[0]
    (tmp_path / "place").mkdir()
    before = snapshot(tmp_path), snapshot(design)
    argv = [a.format(checkpoint=checkpoint, place=tmp_path / "place", design=design) for a in argv]
    fails_with_one_line(capsys, argv, message)
    assert (snapshot(tmp_path), snapshot(design)) == before


# --- interrupts: real processes, real signals


def _environment() -> dict:
    return {**os.environ, "BREVITAS_JIT": "0", "OMP_NUM_THREADS": "1"}


def _interruptible() -> None:
    # a shell's background job starts with Ctrl-C ignored, and Python keeps an ignored SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [str(INSTABNN_HW), *argv],
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
        **kwargs,
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert process.poll() is None, f"ended before the signal: {process.communicate()}"
        time.sleep(0.05)
    process.kill()
    process.communicate()
    raise AssertionError("the moment to interrupt never came")


def _staging(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(STAGING_SUFFIX)]


@pytest.fixture(scope="module")
def previous(tmp_path_factory) -> Path:
    """A design of the slow model, which interrupted runs must leave as it is."""
    out = tmp_path_factory.mktemp("previous") / "design"
    assert main(["generate", *SLOW, "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_generate_exits_130_quietly_and_leaves_the_old_design(previous, sig):
    before = snapshot(previous.parent)
    process = _start(["generate", *SLOW, "--out", str(previous)])
    _wait_for(lambda: _staging(previous.parent), process)
    time.sleep(0.5)  # in the middle of writing the Verilog
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.splitlines() == ["instabnn-hw: interrupted"] and out == ""
    assert snapshot(previous.parent) == before, "the old design is intact and no staging folder is left"


def test_a_killed_generate_leaves_the_old_design_and_the_next_run_removes_its_staging(previous, tmp_path):
    before = snapshot(previous.parent)
    process = _start(["generate", *SLOW, "--out", str(previous)])
    staging = _wait_for(lambda: _staging(previous.parent), process)
    time.sleep(0.5)
    process.kill()
    process.communicate(timeout=30)
    assert _staging(previous.parent) == staging, "a KILL leaves its staging folder"
    assert main(["generate", *SMALL, "--out", str(previous.parent / "other")]) == 0
    assert not _staging(previous.parent), "the next run beside it removed the dead process's staging"
    after = snapshot(previous.parent)
    assert {k: v for k, v in after.items() if not k.startswith("other")} == before


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), in its own process group or not."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        kids = parents.get(frontier.pop(), [])
        found += kids
        frontier += kids
    return found


def _descendants_running(pid: int, program: bytes) -> list[int]:
    """``pid``'s descendants whose command line holds ``program``."""
    found = []
    for child in _children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if program in command:
            found.append(child)
    return found


def _simulator(pid: int) -> list[int]:
    """The running simulation among ``pid``'s descendants (Icarus's ``vvp``: it builds in a second)."""
    return _descendants_running(pid, b"vvp\0")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def sim_build(tmp_path_factory) -> Path:
    """One simulator build folder for the interrupt tests: the second reuses the first's build."""
    return tmp_path_factory.mktemp("sim") / "build"


def _start_simulation(design: Path, build: Path) -> subprocess.Popen:
    """`simulate` of enough images that the simulation is still running when the signal comes."""
    argv = ["simulate", str(design), "--random", "--images", "100", "--no-progress", "--simulator", "icarus"]
    return _start([*argv, "--build-dir", str(build)])


@pytest.mark.cocotb
def test_a_killed_simulate_takes_the_simulator_with_it(design, sim_build):
    process = _start_simulation(design, sim_build)
    simulator = _wait_for(lambda: _simulator(process.pid), process)
    children = _children(process.pid)
    process.kill()
    process.communicate(timeout=30)
    assert simulator[0] in children
    assert _gone(children), "the simulation and every process it started died with simulate"


@pytest.mark.cocotb
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_simulate_exits_130_and_ends_its_children(design, sim_build, sig):
    process = _start_simulation(design, sim_build)
    _wait_for(lambda: _simulator(process.pid), process)
    children = _children(process.pid)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.splitlines()[-1] == "instabnn-hw: interrupted"
    assert _gone(children)


def test_records_are_written_whole(tmp_path, capsys):
    from instabnn_hw.files import atomic_write

    target = tmp_path / "r.json"
    atomic_write(target, json.dumps([1, 2]))
    atomic_write(target, json.dumps([3]))
    assert json.loads(target.read_text()) == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.fixture(scope="module")
def tiny_design(tmp_path_factory) -> Path:
    """tests/graphs.py's tiny CNV at PE = SIMD = 1, which builds for the iCEBreaker in seconds."""
    from graphs import tiny_cnv

    from instabnn_hw.codegen import ir
    from instabnn_hw.codegen.plan import plan
    from instabnn_hw.design_folder import write_design

    graph = tiny_cnv(3)
    fold = {n.name: (1, 1) for n in graph.nodes if isinstance(n, (ir.XnorConv, ir.IntConv))}
    out = tmp_path_factory.mktemp("tiny") / "design"
    source = {"kind": "test", "name": graph.model}
    write_design(out, graph, plan(graph, fold=fold), source=source, preprocessing={"dataset": None, "input_size": 12})
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_build_exits_130_and_ends_nextpnr(tiny_design, sig):
    before = snapshot(tiny_design)
    process = _start(["build", str(tiny_design), "--device", "up5k", "--board", "icebreaker", "--no-progress"])
    nextpnr = _wait_for(lambda: _descendants_running(process.pid, b"nextpnr"), process)
    children = _children(process.pid)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err.splitlines() == ["instabnn-hw: interrupted"]
    assert nextpnr[0] in children and _gone(children), "nextpnr and every process it started ended with build"
    assert snapshot(tiny_design) == before, "no build folder, no staging folder"


def test_a_build_past_its_time_limit_stops_its_tool_and_keeps_the_log(tiny_design):
    before = snapshot(tiny_design)
    argv = ["build", str(tiny_design), "--device", "up5k", "--board", "icebreaker", "--timeout", "4", "--no-progress"]
    process = _start(argv)
    tools = _wait_for(lambda: _descendants_running(process.pid, b"yowasp"), process)
    children = _children(process.pid)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and out == ""
    (line,) = err.splitlines()
    assert (
        line.startswith("instabnn-hw: error: ") and " was stopped at the build's time limit of 4 s (--timeout" in line
    )
    assert tools[0] in children and _gone(children), "the tool and every process it started were stopped"
    log = Path(line.split("its log: ")[1])
    assert log.parent == tiny_design / "build-failed" and log.is_file()
    after = snapshot(tiny_design)
    assert {k: v for k, v in after.items() if not k.startswith("build-failed")} == before, "no build, no staging"


# --- train, eval and models: bad options and unsafe outputs, refused before any training

DIGITS = ["--dataset", "digits", "--input-size", "8", "--width", "8", "--batch-size", "32", "--limit", "64"]
DIGITS += ["--test-limit", "32", "--epochs2", "1", "--no-progress"]


class _RunsCode:
    """Pickles into a call of os.system: loading it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_cifar(place: Path) -> Path:
    import pickle

    folder = place / "cifar-10-batches-py"
    folder.mkdir()
    payload = pickle.dumps({b"data": _RunsCode(place / "marker"), b"labels": [0]}, protocol=2)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(payload)
    return folder


def _shipped() -> Path:
    from instabnn_hw.quant.checkpoint import shipped_checkpoints

    return shipped_checkpoints()[0]


def _damaged_checkpoint(place: Path) -> Path:
    import torch

    data = torch.load(_shipped(), weights_only=True)
    name = next(k for k, v in data["state_dict"].items() if v.is_floating_point())
    data["state_dict"][name] = data["state_dict"][name] * float("nan")
    torch.save(data, place / "nan.pt")
    return place / "nan.pt"


def _edited_checkpoint(place: Path) -> Path:
    import torch

    data = torch.load(_shipped(), weights_only=True)
    data["config"] = json.dumps({**json.loads(data["config"]), "act_bits": "8"})
    torch.save(data, place / "edited.pt")
    return place / "edited.pt"


def _plain_checkpoint_as_state(place: Path) -> str:
    import shutil

    shutil.copy(_shipped(), place / "m.pt.state.pt")
    return "m.pt"


# case: (argv with {place}, whatever a preparation returns as {made}; the preparation; the message)
COMMANDS = {
    "train --threads -2": (
        ["train", *DIGITS, "--threads", "-2", "--out", "{place}/m.pt"],
        None,
        "--threads must be >= 1",
    ),
    "train --threads 0": (
        ["train", *DIGITS, "--threads", "0", "--out", "{place}/m.pt"],
        None,
        "--threads must be >= 1",
    ),
    "train --lr inf": (
        ["train", *DIGITS, "--lr", "inf", "--out", "{place}/m.pt"],
        None,
        "--lr must be a finite number",
    ),
    "train --weight-decay nan": (
        ["train", *DIGITS, "--weight-decay", "nan", "--out", "{place}/m.pt"],
        None,
        "--weight-decay must be a finite number, not nan",
    ),
    "train --seed huge": (
        ["train", *DIGITS, "--seed", "99999999999999999999999", "--out", "{place}/m.pt"],
        None,
        "--seed must be from 0 to 2**63 - 1",
    ),
    "train --out a folder": (["train", *DIGITS, "--out", "{place}"], None, "is a folder"),
    "train --out empty": (["train", *DIGITS, "--out", ""], None, "give a file name"),
    "train --out unwritable": (["train", *DIGITS, "--out", "/proc/m.pt"], None, "cannot write in /proc"),
    "train --out a file of the user's": (
        ["train", *DIGITS, "--out", "{made}"],
        lambda place: (place / "notes.txt").write_text("mine") and place / "notes.txt",
        "exists and is not a checkpoint",
    ),
    "train --out its own record's name": (["train", *DIGITS, "--out", "{place}/m.json"], None, "ends in .json"),
    "train --resume from a plain checkpoint": (
        ["train", *DIGITS, "--resume", "--out", "{place}/{made}"],
        _plain_checkpoint_as_state,
        "is not a training state of instabnn-hw train",
    ),
    "train on a crafted CIFAR-10 batch": (
        ["train", "--model", "cnv", "--dataset", "cifar10", "--data", "{made}", "--out", "{place}/m.pt"],
        _crafted_cifar,
        "which a CIFAR-10 batch never holds",
    ),
    "eval of a checkpoint holding NaN": (
        ["eval", "{made}", "--dataset", "fashion-mnist", "--limit", "4"],
        _damaged_checkpoint,
        "holds non-finite values",
    ),
    "models --prelu for a model without one": (
        ["models", "--name", "cnv", "--prelu", "insta"],
        None,
        "cnv has no PReLU",
    ),
    "generate from a checkpoint whose config was edited": (
        ["generate", "--checkpoint", "{made}", "--no-progress", "--out", "{place}/d"],
        _edited_checkpoint,
        "act_bits must be an integer, not '8'",
    ),
    "generate --seed with a checkpoint": (
        ["generate", "--checkpoint", "{made}", "--seed", "3", "--out", "{place}/d"],
        lambda place: _shipped(),
        "--seed seeds random weights; a checkpoint brings its own",
    ),
}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("argv, prepare, message", COMMANDS.values(), ids=COMMANDS.keys())
def test_bad_options_and_unsafe_outputs_are_refused_before_any_work(tmp_path, capsys, argv, prepare, message):
    place = tmp_path / "place"
    place.mkdir()
    made = prepare(place) if prepare else None
    before = snapshot(tmp_path)
    fails_with_one_line(capsys, [a.format(place=place, made=made) for a in argv], message)
    assert snapshot(tmp_path) == before, "nothing lost, nothing left (and no marker: no code ran)"


def test_a_step_without_epochs_hands_on_to_the_next(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", *DIGITS, "--epochs1", "0", "--out", str(out)]) == 0
    assert "step 2 epoch 1/1" in capsys.readouterr().out and out.is_file()


def test_simulate_refuses_a_data_folder_it_would_not_read(tmp_path, capsys, design):
    fails_with_one_line(capsys, ["simulate", str(design), "--random", "--data", str(tmp_path)], "--data names")


def test_a_reader_that_goes_away_ends_the_command_quietly():
    with _start(["models", "--name", "cnv"]) as process:
        process.stdout.close()  # as `| head` does once it has read enough; here before anything is written
        err = process.stderr.read()
        assert process.wait(timeout=120) == 141 and err == ""
