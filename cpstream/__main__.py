"""``python -m cpstream [options]`` is ``twistd -n cpstream [options]``."""

import sys

from twisted.scripts.twistd import run


def main() -> None:
    sys.argv = ["twistd", "--nodaemon", "cpstream", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
