"""``cpstream``: the command line of the control plane.

    cpstream serve [daemon options]          the daemon (``twistd -n --pidfile= cpstream``)
    cpstream gateway --broker redis://...    a stream gateway (``twistd ... cpstream-gateway``)
    cpstream [global options] COMMAND ...    a client of a running daemon (REST and /ws/)

Global options (``--url``, ``--token``, ``--data-dir``, ``--json``) go before or
after the command. Exit codes: 0 success, 1 the API refused (its ``error`` on
stderr), 2 a usage error, 3 no daemon answered at the URL, 130 a follower
stopped by Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

from cpstream import __version__

EPILOG = """\
credentials: --token, else $CPSTREAM_TOKEN, else DATA_DIR/operator.token
(--data-dir, default ~/.cpstream). url: --url, else $CPSTREAM_URL, else
http://127.0.0.1:18800. exit codes: 0 ok, 1 the API refused, 2 usage,
3 cannot connect, 130 interrupted. Run 'cpstream COMMAND --help' for a command's options.
"""


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value!r}")
    return number


def _positive(value: str) -> int:
    number = _count(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value!r}")
    return number


def _env_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {value!r}")
    return key, val


def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The global options; on a command's parser their default is "not given", so a
    value given before the command stands unless repeated after it."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--url",
        default=default(None),
        help="the daemon (default: $CPSTREAM_URL, else http://127.0.0.1:18800)",
    )
    group.add_argument(
        "--token",
        default=default(None),
        help="the credential (default: $CPSTREAM_TOKEN, else DATA_DIR/operator.token)",
    )
    group.add_argument(
        "--data-dir",
        default=default(None),
        metavar="DIR",
        help="where operator.token is (default: ~/.cpstream)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of tables (one object per line for streams)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="cpstream",
        description="A control plane for local agent processes: the daemon and its client.",
        epilog=EPILOG,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"cpstream {__version__}")
    _globals(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _globals(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, run: str | None, **kwargs: Any) -> Any:
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            parents=[common],
            allow_abbrev=False,
            **kwargs,
        )
        p.set_defaults(run=run, parser=p)
        return p

    sub.add_parser(
        "serve",
        help="run the daemon: twistd -n --pidfile= cpstream [options] ('cpstream serve --help')",
        add_help=False,
    )

    sub.add_parser(
        "gateway",
        help="run a stream gateway: twistd -n --pidfile= cpstream-gateway --broker redis://..."
        " ('cpstream gateway --help')",
        add_help=False,
    )

    p = command("ls", "list instances: name, status, pid, port, uptime, restarts", "ls")
    p.add_argument("--archived", action="store_true", help="archived instances too")
    p.add_argument(
        "-w", "--watch", action="store_true", help="keep the table live (from /ws/instances)"
    )

    p = command(
        "create",
        "create an instance (stopped)",
        "create",
        usage="cpstream create NAME [--port P] [--health http|process]"
        " [--restart on-failure|never] [--env KEY=VALUE]... [-- CMD ARGS...]",
        epilog="Without '-- CMD ARGS...' the daemon's default command (the demo agent) runs.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--port", type=_positive, help="its port (default: a free one)")
    p.add_argument("--health", choices=("http", "process"), help="default: http")
    p.add_argument("--restart", choices=("on-failure", "never"), help="default: on-failure")
    p.add_argument(
        "-e",
        "--env",
        type=_env_pair,
        action="append",
        metavar="KEY=VALUE",
        help="an environment variable of the child (repeatable)",
    )

    verbs = {
        "start": "start instances",
        "stop": "stop instances (SIGTERM to the group, SIGKILL after 5 s)",
        "restart": "restart instances",
        "archive": "archive instances (stopped first)",
        "unarchive": "bring archived instances back",
        "delete": "delete archived instances for good, logs included",
    }
    for verb, summary in verbs.items():
        p = command(verb, summary, "lifecycle")
        p.add_argument("names", nargs="+", metavar="NAME")

    p = command("clone", "create an instance like another (command, env, health, restart)", "clone")
    p.add_argument("name", metavar="NAME")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--port", type=_positive, help="its port (default: a free one)")

    p = command(
        "logs",
        "an instance's log: the last lines, or follow it",
        "logs",
        epilog="With -f, rotations ('--- log rotated ---') and gaps ('--- gap: ... ---') are"
        " reported on stderr; a dropped connection or a daemon restart is survived by"
        " reconnecting and resuming right after the last line printed.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "-n",
        "--lines",
        type=_count,
        default=100,
        metavar="N",
        help="how many of the last lines (default 100; at most 1000 with -f)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="then print new lines as they come")

    p = command(
        "events",
        "follow the event stream: instance changes, or message events (--messages)",
        "events",
        epilog="One line per event (--json: every frame as one JSON object per line). After a"
        " dropped connection the stream resumes where it stopped; when the daemon cannot"
        " replay (another database, events pruned), a '--- resync' line says so.",
    )
    p.add_argument("--messages", action="store_true", help="message events (/ws/messages)")
    p.add_argument("--instance", metavar="NAME", help="only events about this instance")
    p.add_argument("--correlation", metavar="ID", help="only this correlation id (--messages)")

    p = command("send", "send a message", "send")
    p.add_argument("sender", metavar="FROM")
    p.add_argument("recipient", metavar="TO")
    p.add_argument("type", metavar="TYPE")
    p.add_argument("payload", metavar="PAYLOAD_JSON", help="the payload, as JSON")
    p.add_argument("--correlation", metavar="ID", help="its correlation id")
    p.add_argument("--key", metavar="K", help="an idempotency key (per sender, 24 h)")

    p = command("messages", "search messages, newest first (no payloads)", "messages")
    p.add_argument("--instance", metavar="N", help="sent by or to this instance")
    p.add_argument("--status", metavar="S", help="queued, delivered, acknowledged, ...")
    p.add_argument("--type", metavar="T", help="this message type")
    p.add_argument("--correlation", metavar="ID", help="this correlation id")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N (default 100)")

    p = command("message", "one message (payload redacted) and its event timeline", "message")
    p.add_argument("id", metavar="ID")

    p = command("dlq", "the dead letters, newest first", "dlq")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most N (default 100)")

    p = command("replay", "queue a dead letter again", "replay")
    p.add_argument("id", metavar="ID")

    p = command(
        "rules",
        "the routing rules: list them (no subcommand), add one or remove one",
        "rules",
        usage="cpstream rules [add FROM TO PATTERN [--max-retries N] [--ttl S] | rm ID]",
    )
    p.set_defaults(action=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="allow messages FROM -> TO whose type matches PATTERN ('task.handoff', 'task.*')",
        parents=[common],
        allow_abbrev=False,
    )
    add.add_argument("sender", metavar="FROM")
    add.add_argument("recipient", metavar="TO")
    add.add_argument("pattern", metavar="PATTERN")
    add.add_argument("--max-retries", type=_count, metavar="N", help="default 5")
    add.add_argument("--ttl", type=_positive, metavar="S", help="seconds; default 3600")
    rm = actions.add_parser("rm", help="remove a rule", parents=[common], allow_abbrev=False)
    rm.add_argument("id", metavar="ID")
    return parser


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """``create``'s ``-- CMD ARGS...``: everything after the first ``--``."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1 :]


def parse(argv: list[str]) -> argparse.Namespace:
    """Parsed and checked arguments; a usage error exits with 2."""
    from cpstream.cli.client import DEFAULT_URL, check_url

    parser = build_parser()
    argv, command_argv = _split_command(argv)
    args = parser.parse_args(argv)
    if args.command in ("serve", "gateway"):
        parser.error(f"{args.command} takes the daemon's options only: cpstream {args.command} ...")
    if command_argv and args.command != "create":
        parser.error("'-- CMD ARGS...' goes with create only")
    args.argv = command_argv
    parser = args.parser
    args.url = args.url or os.environ.get("CPSTREAM_URL") or DEFAULT_URL
    problem = check_url(args.url)
    if problem:
        parser.error(problem)
    if args.command == "send":
        try:
            args.payload = json.loads(args.payload)
        except ValueError as e:
            parser.error(f"PAYLOAD_JSON is not JSON: {e}")
    if args.command == "events" and args.correlation and not args.messages:
        parser.error("--correlation filters message events: add --messages")
    return args


async def _run(reactor: Any, args: argparse.Namespace, finished: list[int]) -> None:
    from cpstream.cli import commands
    from cpstream.cli.client import ApiError, Client, Unreachable, find_token
    from cpstream.cli.follow import StreamRefused
    from cpstream.cli.output import Output

    out = Output()
    client = Client(args.url, find_token(args.token, args.data_dir), reactor)
    context = commands.Context(reactor, client, out, args)
    try:
        code = await getattr(commands, args.run)(context)
    except ApiError as e:
        hint = ""
        if e.code == 401:
            hint = " (give a token: --token, $CPSTREAM_TOKEN or --data-dir with operator.token)"
        out.note(f"cpstream: {e.code} {e.message}{hint}")
        code = 1
    except StreamRefused as e:
        out.note(f"cpstream: {e.code} {e.message}")
        code = 1
    except Unreachable as e:
        out.note(f"cpstream: cannot connect to {e.url}: {e.reason}")
        code = 3
    except Exception:
        out.note("cpstream: internal error\n" + traceback.format_exc().rstrip())
        code = 1
    finished.append(code)
    raise SystemExit(code)


def serve(argv: list[str], plugin: str = "cpstream") -> None:
    """The daemon, exactly as ``python -m cpstream [options]`` (or a gateway)."""
    from cpstream.__main__ import main as daemon

    sys.argv = [f"cpstream {'serve' if plugin == 'cpstream' else 'gateway'}", *argv]
    daemon(plugin)


def main(argv: list[str] | None = None) -> None:
    """The ``cpstream`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return
    if argv[:1] == ["gateway"]:
        serve(argv[1:], "cpstream-gateway")
        return
    args = parse(argv)
    from twisted.internet import task

    finished: list[int] = []
    try:
        task.react(_run, (args, finished))
    except SystemExit:
        if not finished:  # the reactor stopped first: Ctrl-C (or SIGTERM) on a follower
            raise SystemExit(130) from None
        raise
