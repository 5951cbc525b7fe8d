"""The Autobahn TestSuite against the real daemon's ``/ws/echo`` (``twistd cpstream --echo``).

The suite's case files are driven by ``kosoku``; a case passes only if both its
behaviour and its closing behaviour are OK, NON-STRICT or INFORMATIONAL. On top
of the suite, where a case expects the server to fail the connection, the
server must say why with the expected close code (1002, 1007, ...), not drop
the TCP connection: the suite accepts a drop, our clients deserve the code.
``make test`` runs cases 1.* to 10.*; ``make conformance`` runs all 517,
including the permessage-deflate cases 12.* and 13.* (minutes, not seconds).
Reports (JSON and HTML per case, ``index.html``) land in
``test-artifacts/autobahn/<core|full>/``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import pytest_twisted

from tests.support import ARTIFACTS, Daemon, run_process

PASSING = frozenset({"OK", "NON-STRICT", "INFORMATIONAL"})
CORE = tuple(f"{section}.*" for section in (1, 2, 3, 4, 5, 6, 7, 9, 10))  # there is no 8.*
CORE_CASES = 301
ALL_CASES = 517
PARALLEL = 4
# The one case where the server's close frame is lost, with the reason.
DROP_EXEMPT = {
    "3.7": "a close frame with RSV bits set: Autobahn sends close 1002, then takes the "
    "same frame for the client's reply and aborts the TCP, discarding its own frame",
}


def kosoku() -> str:
    """The ``kosoku`` script installed beside this interpreter (the test extra)."""
    script = Path(sys.executable).with_name("kosoku")
    found = str(script) if script.exists() else shutil.which("kosoku")
    assert found, "kosoku is not installed: pip install -e '.[test]'"
    return found


async def run_suite(data_dir: Path, name: str, include: tuple[str, ...], timeout: float) -> dict:
    """Run the selected cases against a fresh ``--echo`` daemon; return kosoku's index."""
    reports = ARTIFACTS / "autobahn" / name
    shutil.rmtree(reports, ignore_errors=True)
    # The suite speaks WebSocket, not our tokens: --auth none (loopback only) lets it in.
    daemon = Daemon(data_dir, "--echo", "--auth", "none")
    await daemon.start()
    argv = [kosoku(), daemon.url.replace("http://", "ws://") + "/ws/echo"]
    argv += ["-p", str(PARALLEL), "-o", str(reports)]
    for pattern in include:
        argv += ["-i", pattern]
    try:
        code, output = await run_process(argv, timeout)
    finally:
        await daemon.stop()
    index = reports / "index.json"
    assert index.exists(), f"kosoku wrote no report (exit {code}):\n{output}"
    cases = {
        case: entry
        for agent in json.loads(index.read_text()).values()
        for case, entry in agent.items()
    }
    failed = {
        case: f"{entry['behavior']} / close {entry['behaviorClose']}"
        for case, entry in cases.items()
        if entry["behavior"] not in PASSING or entry["behaviorClose"] not in PASSING
    }
    assert not failed, f"{len(failed)} cases failed (see {reports}/index.html): {failed}"
    dropped = [
        case
        for case in cases
        if case not in DROP_EXEMPT and dropped_without_code(reports / cases[case]["reportfile"])
    ]
    assert not dropped, f"server dropped the connection instead of closing with a code: {dropped}"
    assert code == 0, f"kosoku exited {code}:\n{output}"
    log = daemon.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log
    return cases


def dropped_without_code(report: Path) -> bool:
    """Whether the server was to fail this case's connection but sent no expected close code."""
    case = json.loads(report.read_text())
    expected = case["expectedClose"]
    return not expected.get("closedByMe", True) and (
        case["remoteCloseCode"] not in expected["closeCode"]
    )


@pytest_twisted.ensureDeferred
async def test_autobahn_core_cases(data_dir):
    """Every Autobahn case 1.* to 10.* (framing, UTF-8, close, limits) passes on /ws/echo."""
    cases = await run_suite(data_dir, "core", CORE, timeout=100)
    assert len(cases) == CORE_CASES


@pytest.mark.conformance
@pytest.mark.timeout(3600)
@pytest_twisted.ensureDeferred
async def test_autobahn_all_cases(data_dir):
    """All 517 Autobahn cases, permessage-deflate (12.*, 13.*) included, pass on /ws/echo."""
    cases = await run_suite(data_dir, "full", (), timeout=3300)
    assert len(cases) == ALL_CASES
