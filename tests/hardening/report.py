"""The battery's figures: printed, kept for the session summary, and written to
``test-artifacts/hardening.json`` (one entry per case, merged across runs)."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.support import ARTIFACTS

FIGURES = ARTIFACTS / "hardening.json"
SOAK = os.environ.get("CPSTREAM_SOAK") == "1"
recorded: list[dict[str, Any]] = []


def size(ci: Any, soak: Any) -> Any:
    """The issue's full size under ``make soak`` (CPSTREAM_SOAK=1), a smaller one otherwise."""
    return soak if SOAK else ci


def record(case: str, sent: str, happened: str, figure: str, **numbers: Any) -> None:
    """Keep one case's outcome: what was sent, what happened, the figure, raw numbers."""
    entry = {
        "case": case,
        "sent": sent,
        "happened": happened,
        "figure": figure,
        "soak": SOAK,
        "numbers": numbers,
    }
    recorded.append(entry)
    print(f"[hardening] {case}: {figure}")
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    try:
        table = json.loads(FIGURES.read_text())
    except (OSError, ValueError):
        table = {}
    table[case] = entry
    FIGURES.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
