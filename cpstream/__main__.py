"""``python -m cpstream [options]`` is ``twistd -n --pidfile= cpstream [options]``.

No pid file: a ``twistd.pid`` in the working directory stops a second daemon
started there, and one left by a killed daemon stops the next start whenever
its pid has been reused.
"""

import sys

from twisted.scripts.twistd import run


def main(plugin: str = "cpstream") -> None:
    """twistd's ``plugin`` (``cpstream``, or ``cpstream-gateway``) in the foreground."""
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", plugin, *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
