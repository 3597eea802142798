"""``kit lab``: bring the HA chaos lab up and down by hand and inject faults (see docs/lab.md)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_lab_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``kit lab`` (filled in by the lab work; the parser exists so the CLI layout is fixed)."""
    del sub, common
