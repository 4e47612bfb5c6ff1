"""Hashes of everything `instabnn-hw generate` writes, to show that a change leaves the designs alone.

``record FILE`` generates every design of the simulation suite and resnet18 / mobilenetv1 at
their default folding and writes the SHA-256 of each output file (the manifest key by key) to
FILE; ``check FILE`` generates them again and compares. A manifest key missing from the record
is reported as new, not as a difference; ``--changed KEY`` names keys expected to differ.

    python scripts/design_hashes.py record scripts/design_hashes.json
    python scripts/design_hashes.py check scripts/design_hashes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from instabnn_hw.sim.suite import SUITE, generate_suite_design

DESIGNS = {**{name: None for name in SUITE}, "resnet18": {"model": "resnet18"}, "mobilenetv1": {"model": "mobilenetv1"}}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def design_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of a design folder; ``manifest.json#KEY`` per manifest key."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if not path.is_file():
            continue
        if name == "manifest.json":
            for key, value in json.loads(path.read_text()).items():
                hashes[f"{name}#{key}"] = _digest(json.dumps(value, sort_keys=True).encode())
        else:
            hashes[name] = _digest(path.read_bytes())
    return hashes


def generate_all(root: Path) -> dict[str, dict[str, str]]:
    from instabnn_hw.codegen.generate import GenerateOptions, generate

    result = {}
    for name, options in DESIGNS.items():
        started = time.monotonic()
        if options is None:
            folder = generate_suite_design(name, root)
        else:
            folder = root / name
            generate(GenerateOptions(out=str(folder), **options), progress=False)
        result[name] = design_hashes(folder)
        print(f"{name}: {len(result[name])} files in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return result


def compare(recorded: dict, current: dict, changed: set[str]) -> list[str]:
    problems = []
    for design, files in recorded.items():
        now = current.get(design, {})
        for name, digest in files.items():
            key = name.partition("#")[2]
            if name not in now:
                problems.append(f"{design}: {name} is no longer written")
            elif now[name] != digest and key not in changed:
                problems.append(f"{design}: {name} differs")
        for name in sorted(set(now) - set(files)):
            print(f"{design}: {name} is new", file=sys.stderr)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("file", type=Path)
    parser.add_argument("--changed", action="append", default=[], help="a manifest key expected to differ")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="instabnn-hashes-") as root:
        current = generate_all(Path(root))
    if args.action == "record":
        args.file.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, current.values()))} hashes of {len(current)} designs in {args.file}")
        return 0
    problems = compare(json.loads(args.file.read_text()), current, set(args.changed))
    for line in problems:
        print(line)
    total = sum(map(len, current.values()))
    print(f"{len(problems)} differences in {total} hashes of {len(current)} designs")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
