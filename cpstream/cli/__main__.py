"""``python -m cpstream.cli``: the ``cpstream`` command."""

from cpstream.cli import main

if __name__ == "__main__":
    main()
