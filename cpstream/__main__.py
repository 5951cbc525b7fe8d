"""``python -m cpstream [options]`` is ``twistd -n --pidfile= cpstream [options]``.

No pid file: a ``twistd.pid`` in the working directory stops a second daemon
started there, and one left by a killed daemon stops the next start whenever
its pid has been reused.
"""

import sys

from twisted.scripts.twistd import run


def main() -> None:
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "cpstream", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
