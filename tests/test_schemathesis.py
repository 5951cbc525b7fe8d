"""Contract fuzzing: schemathesis against a real daemon, from the document it serves.

A throwaway daemon (its own data dir, a free loopback port) is seeded with two instances, a
routing rule and a few messages, then ``schemathesis run`` (its CLI, as a subprocess) sends
it the document's examples, boundary and malformed values (coverage), random requests
(fuzzing) and chains of requests linked by their answers (stateful), with the operator
token, every check on (tests/schemathesis.toml says which are off where, and why). It must
end within its budget with no failure: no 5xx, no status the document does not list, every
body as its schema says, refused what the document refuses; and the daemon must have logged
no unhandled error. Reports: ``$ARTIFACTS/schemathesis/`` (JUnit XML, the JSON run report,
the console output).

Fuzzed instances may be started with any ``command``: the daemon runs with a ``PATH`` that
holds only ``setsid``, so a generated command names no program to run unless it is an
absolute path; every process left is killed after the run.

``CPSTREAM_FUZZ_EXAMPLES`` (cases per operation and phase, default 25) and
``CPSTREAM_FUZZ_SEED`` (default 1) tune the run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from cpstream.web.openapi import document
from tests.support import (
    ARTIFACTS,
    ROOT,
    SLEEPER,
    Daemon,
    create,
    get_json,
    kill_processes_with,
    post_json,
    read_token,
    run_process,
)

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = ROOT / "tests" / "schemathesis.toml"
EXAMPLES = int(os.environ.get("CPSTREAM_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("CPSTREAM_FUZZ_SEED", "1")
BUDGET = 100.0  # seconds for the whole schemathesis run
# What the daemon's log shows of an unhandled error, and an access-log line of a 5xx answer.
UNHANDLED = re.compile(r"Traceback \(most recent call last\)|Unhandled error|#critical\]|#error\]")
SERVER_ERROR = re.compile(r'HTTP/1\.[01]" 5\d\d ')


async def seed(url: str) -> None:
    """What the document's examples name: agent-1 and agent-2 (stopped), a rule from one to
    the other for task.*, messages queued, one of them delivered under a lease."""
    api = f"{url}/api"
    for name in ("agent-1", "agent-2"):
        await create(url, name, command=SLEEPER, restart="never")
    rule = {"from_instance": "agent-1", "to_instance": "agent-2", "type_pattern": "task.*"}
    assert (await post_json(f"{api}/routing-rules", rule))[0] == 201
    for n in range(3):
        message = {"from_instance": "agent-1", "to_instance": "agent-2", "payload": {"n": n}}
        assert (await post_json(f"{api}/messages", {**message, "message_type": "task.x"}))[0] == 201
    code, leased = await get_json(f"{api}/instances/agent-2/messages/pending")
    assert code == 200 and leased["message"]["lease_id"], leased


@pytest.mark.timeout(BUDGET + 60)
@pytest_twisted.ensureDeferred
async def test_the_daemon_keeps_its_documented_contract(tmp_path):
    """A bounded schemathesis run finds no failure and the daemon logs no unhandled error."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    setsid = shutil.which("setsid")
    if setsid:
        (bin_dir / "setsid").symlink_to(setsid)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    daemon = Daemon(data_dir, env={"PATH": str(bin_dir)})
    await daemon.start()
    reports = ARTIFACTS / "schemathesis"
    if reports.exists():
        shutil.rmtree(reports)
    reports.mkdir(parents=True)
    try:
        await seed(daemon.url)
        argv = [
            str(SCHEMATHESIS),
            "--config-file", str(CONFIG),
            "run", f"{daemon.url}/api/openapi.json",
            "--header", f"Authorization: Bearer {read_token(data_dir)}",
            "--max-examples", str(EXAMPLES),
            "--seed", SEED,
            "--workers", "1",
            "--request-timeout", "15",
            "--generation-database", "none",
            "--no-color",
            "--report", "junit,json",
            "--report-dir", str(reports),
            "--report-junit-path", str(reports / "junit.xml"),
            "--report-json-path", str(reports / "run.json"),
        ]  # fmt: skip
        started = time.monotonic()
        code, output = await run_process(argv, BUDGET, cwd=ROOT)
        wall = time.monotonic() - started
    finally:
        await daemon.stop()
        kill_processes_with("CPSTREAM_URL", daemon.url)
    (reports / "output.txt").write_text(output)
    (reports / "daemon.log").write_text(daemon.log_text())
    assert code is not None, f"schemathesis did not finish within {BUDGET:.0f} s:\n{output}"

    run: dict[str, Any] = json.loads((reports / "run.json").read_text())
    suite = ET.parse(reports / "junit.xml").getroot()
    operations, cases = run["operations"], run["test_cases"]
    failures = cases["with_failures"]
    print(
        f"\nschemathesis {run['schemathesis_version']}: {operations['tested']} operations,"
        f" {cases['generated']} cases, {failures} failures ({cases['unique_failures']} unique),"
        f" {cases['errored']} errors, {wall:.1f} s (seed {run['seed']},"
        f" {EXAMPLES} examples per operation); reports in {reports}"
    )
    assert code == 0, output
    assert run["complete"] and run["stop_reason"] == "completed", output
    # Every operation but GET /openapi.json, which schemathesis leaves out (its own source).
    documented = sum(len(item) for item in document()["paths"].values())
    assert operations["tested"] == operations["total"] == documented - 1, operations
    assert failures == 0 and cases["errored"] == 0 and not run["errors"], output
    assert cases["generated"] >= 10 * operations["tested"], cases
    assert (int(suite.get("failures")), int(suite.get("errors"))) == (0, 0)
    assert all(phase["status"] in ("success", "skip") for phase in run["phases"].values()), run
    assert run["phases"]["examples"]["status"] == "success", run["phases"]
    log = daemon.log_text()
    assert not UNHANDLED.search(log), log
    assert not SERVER_ERROR.search(log), log
