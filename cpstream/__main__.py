"""``python -m cpstream [options]`` is ``twistd -n cpstream [options]`` without a pid file."""

import sys

from twisted.scripts.twistd import run


def main() -> None:
    sys.argv = ["twistd", "--nodaemon", "--pidfile=", "cpstream", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
