"""Small helpers several test files share (import as ``from helpers import ...``; pytest puts
``tests/`` on ``sys.path``). Fixtures live in ``conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

#: ``evaluate()`` keywords for a silent CPU run (no progress bar, no echoed summary).
QUIET = {"progress": False, "echo": False, "device": "cpu"}


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread, then restore the caller's count. The test models
    are tiny: two threads on the shared 2-core machine only thrash (up to 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``evalkit.cli.main(argv)`` -> (exit code, stripped stderr of this call only). argparse
    errors leave through SystemExit, EvalkitError through the return value; both count."""
    from evalkit.cli import main

    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 2
    return rc, capsys.readouterr().err.strip()


def one_line(err: str) -> bool:
    """Whether an error message is one non-empty line and no traceback."""
    return bool(err) and len(err.splitlines()) == 1 and "Traceback" not in err
