"""The one error path of the command line: every error a user can cause derives from :class:`UserError`.

`instabnn-hw` prints such an error as one line, ``instabnn-hw: error: MESSAGE``, and exits with
status 2; anything else is a bug and keeps its traceback. Options are checked once, by the
library function that takes them (:func:`check_number`); an :class:`OptionError` names the
parameter (``clock_mhz``), and the command line names the flag (``--clock``) instead.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["CLOCK_MHZ", "MAX_SEED", "UserError", "OptionError", "check_clock", "check_number"]

#: Clock targets a design is planned or built for, in MHz: no FPGA runs slower or faster.
CLOCK_MHZ = (0.001, 1000.0)
#: Seeds are 64-bit: what torch's and numpy's generators take.
MAX_SEED = 2**63 - 1


class UserError(Exception):
    """Bad input, or a place the command cannot work in; the message is one line saying what to do."""


class OptionError(UserError, ValueError):
    """An option out of its range: ``parameters`` (keywords of the library call; usually one) and
    what is wrong with them."""

    def __init__(self, parameter: str, problem: str, *, others: tuple[str, ...] = ()) -> None:
        self.parameters = (parameter, *others)
        self.problem = problem
        super().__init__(f"{' and '.join(self.parameters)} {problem}")


def _bound(value: float) -> str:
    if not isinstance(value, int):
        return f"{value:g}"
    bits = value.bit_length()
    # a power of two less one reads as what it is: the limit of a machine type
    return f"2**{bits} - 1" if bits >= 31 and value == 2**bits - 1 else str(value)


def check_number(
    parameter: str,
    value,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    optional: bool = False,
):
    """``value`` if it is a finite number in its range, else :class:`OptionError`.

    ``low`` / ``high`` bound it (``low_open``: strictly above ``low``); ``integer`` refuses
    fractions; ``bool`` is never a number; ``optional`` lets ``None`` through.
    """
    if value is None and optional:
        return None
    kind = "a whole number" if integer else "a finite number"
    is_number = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not is_number or (not integer and not math.isfinite(value)):
        raise OptionError(parameter, f"must be {kind}, not {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        if low is not None and high is not None:
            bounds = (
                f"from {_bound(low)} to {_bound(high)}" if not low_open else f"> {_bound(low)} and <= {_bound(high)}"
            )
        elif low is not None:
            bounds = f"> {_bound(low)}" if low_open else f">= {_bound(low)}"
        else:
            bounds = f"<= {_bound(high)}"
        raise OptionError(parameter, f"must be {bounds}, not {value!r}")
    return value


def check_clock(parameter: str, value) -> float:
    """``value`` as a clock in MHz within :data:`CLOCK_MHZ`, else :class:`OptionError`."""
    return float(check_number(parameter, value, low=CLOCK_MHZ[0], high=CLOCK_MHZ[1]))
