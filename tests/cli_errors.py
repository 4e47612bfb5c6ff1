"""The command line's contract for bad input, checked the same way by every CLI test."""

from instabnn_hw.cli import main

__all__ = ["fails_with_one_line"]


def fails_with_one_line(capsys, argv, message):
    """``instabnn-hw ARGV`` exits with 2, prints one line naming ``message`` on stderr and nothing on stdout."""
    try:
        status = main(argv)
    except SystemExit as exit_:  # a usage error, from argparse
        status = exit_.code
    assert status == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("instabnn-hw") and "error: " in lines[0] and message in lines[0], lines[0]
    assert captured.out == ""
