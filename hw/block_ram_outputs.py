"""Block RAM output registers: flip-flops that register a DP16KD's read data moved into the block.

An ECP5 ``DP16KD`` without its output register takes 5.6-5.8 ns from the clock to its data, most
of a cycle at 150 MHz; with it (``REGMODE_A`` / ``REGMODE_B`` ``"OUTREG"``) 0.97 ns. Yosys maps
every memory read without it and cannot be told otherwise, so the components register each
block RAM's read data in a plain flip-flop beside the block (no reset, an enable at most), and
:func:`absorb_output_registers` moves those flip-flops into the blocks in Yosys's JSON netlist
before place and route. The behaviour is the same cycle for cycle: the output register is a
D flip-flop on the block's read data with its own enable (``OCEA`` / ``OCEB``), so the design
simulated (with the flip-flops in the fabric) is the design built.

A read port is converted when every read data bit in use drives exactly one cell, a
``TRELLIS_FF`` on the port's clock that starts at zero, has no set or reset and whose enable (if
any) is the same net for all of them, and when the port has no read reset and no output
register yet; otherwise it is left as it is. Writes do not matter: the output register takes
whatever the block's read data would have shown the flip-flop, on the same edges (ROMs and
written buffers alike).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

__all__ = ["absorb_output_registers", "absorb_output_registers_in_file"]


def _sinks(module: dict) -> dict[int, list[tuple[str | None, str]]]:
    """Every netlist bit's readers: ``(cell name, port)``, ``(None, port name)`` for a module output."""
    sinks = defaultdict(list)
    for name, cell in module["cells"].items():
        directions = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if directions.get(port, "input") != "output":
                for bit in bits:
                    if isinstance(bit, int):
                        sinks[bit].append((name, port))
    for port_name, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for bit in port["bits"]:
                if isinstance(bit, int):
                    sinks[bit].append((None, port_name))
    return sinks


def _largest_bit(module: dict) -> int:
    """The largest net number of a module (its cells, ports and net names)."""
    lists = [bits for cell in module.get("cells", {}).values() for bits in cell["connections"].values()]
    lists += [port["bits"] for port in module.get("ports", {}).values()]
    lists += [net["bits"] for net in module.get("netnames", {}).values()]
    return max((bit for bits in lists for bit in bits if isinstance(bit, int)), default=1)


def _enable(cell: dict, clock: list) -> tuple[str, object] | None:
    """The enable of a flip-flop that may become a block's output register, ``("1", "1")`` for
    always, ``("CE", net)`` or ``("INV", net)`` (enabled while the net is low), or ``None`` if it
    may not (another clock, an inverted clock, a set or reset, an initial one)."""
    connections, parameters = cell["connections"], cell["parameters"]
    if connections.get("CLK") != clock or parameters.get("CLKMUX", "CLK").strip() != "CLK":
        return None
    if parameters.get("REGSET", "RESET").strip() != "RESET" or connections.get("LSR", ["0"]) != ["0"]:
        return None
    mux = parameters.get("CEMUX", "1").strip()
    if mux == "1":
        return ("1", "1")
    if mux in ("CE", "INV"):
        return (mux, connections["CE"][0])
    return None


def _read_port(block: dict, port: str) -> str:
    """The port whose clock, enables and reset govern read data ``DO{port}``: in the 36-bit
    pseudo-dual-port mode both halves are read through port B."""
    return "B" if _width(block, "A") == 36 else port


def _width(block: dict, port: str) -> int:
    value = block["parameters"].get(f"DATA_WIDTH_{port}", "0")
    return int(value, 2) if isinstance(value, str) else int(value)


def _absorb_port(module: dict, block: dict, ports: str, sinks: dict, fresh: Iterator[int]) -> bool:
    """Move the flip-flops on the read data ``DO{p}`` (``p`` in ``ports``, read through one port) of
    the DP16KD ``block`` into its output registers; ``fresh`` numbers a new net."""
    cells, connections, parameters = module["cells"], block["connections"], block["parameters"]
    read = _read_port(block, ports[0])
    if any(parameters.get(f"REGMODE_{p}", "NOREG") != "NOREG" for p in ports):
        return False
    if parameters.get(f"CLK{read}MUX", f"CLK{read}") != f"CLK{read}":
        return False
    if connections.get(f"RST{read}", ["0"]) != ["0"] or connections.get(f"OCE{read}", ["1"]) != ["1"]:
        return False
    registers, enables = {}, set()
    for name, bit in _outputs(block, ports, sinks).items():
        readers = sinks[bit]
        if len(readers) != 1:
            return False
        (cell_name, cell_port) = readers[0]
        if cell_name is None or cell_port != "DI" or cells[cell_name]["type"] != "TRELLIS_FF":
            return False
        enable = _enable(cells[cell_name], connections[f"CLK{read}"])
        if enable is None:
            return False
        registers[name] = cell_name
        enables.add(enable)
    if len(enables) != 1:
        return False
    ((mux, net),) = enables
    if mux == "INV":  # an inverter for the block's enable, which has no polarity choice
        inverted = next(fresh)
        cells[f"{registers[min(registers)]}_oce_inverter"] = {
            "hide_name": 1,
            "type": "LUT4",
            "parameters": {"INIT": "0101010101010101"},
            "attributes": {},
            "port_directions": {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"},
            "connections": {"A": [net], "B": ["0"], "C": ["0"], "D": ["0"], "Z": [inverted]},
        }
        net = inverted
    connections[f"OCE{read}"] = [net]
    for p in ports:
        parameters[f"REGMODE_{p}"] = "OUTREG"
    for name, cell_name in registers.items():
        connections[name] = cells.pop(cell_name)["connections"]["Q"]
    return True


def _outputs(block: dict, ports: str, sinks: dict) -> dict[str, int]:
    """The read data bits of ``DO{p}`` (``p`` in ``ports``) that something reads, by port name."""
    return {
        name: bits[0]
        for name, bits in block["connections"].items()
        if name[:3] in {f"DO{p}" for p in ports} and isinstance(bits[0], int) and sinks.get(bits[0])
    }


def absorb_output_registers(netlist: dict) -> tuple[int, int]:
    """Move the flip-flops that register DP16KD read data into the blocks' output registers, in place.

    Parameters
    ----------
    netlist : dict
        Yosys's JSON netlist after ``synth_ecp5`` (other families have no DP16KD: left alone).

    Returns
    -------
    (converted, ports) : (int, int)
        Read ports given their output register, of the DP16KD read ports in use.
    """
    converted = ports = 0
    for module in netlist.get("modules", {}).values():
        sinks = _sinks(module)
        fresh = itertools.count(1 + _largest_bit(module))
        for block in [cell for cell in module.get("cells", {}).values() if cell["type"] == "DP16KD"]:
            # the 36-bit mode reads both halves through port B, under one output register mode
            groups = ["AB"] if _width(block, "A") == 36 else ["A", "B"]
            for group in groups:
                if _outputs(block, group, sinks):
                    ports += 1
                    converted += _absorb_port(module, block, group, sinks, fresh)
    return converted, ports


def absorb_output_registers_in_file(path: Path) -> tuple[int, int]:
    """:func:`absorb_output_registers` on a JSON netlist file, rewritten in place (when it changes)."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    converted, ports = absorb_output_registers(netlist)
    if converted:
        path.write_text(json.dumps(netlist))
    return converted, ports
