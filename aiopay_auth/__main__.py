"""``python -m aiopay_auth``: the command-line interface (see :mod:`aiopay_auth._cli`)."""

from aiopay_auth._cli import main


# The guard matters: the demo's child process (multiprocessing "spawn")
# imports this module again, and must not run the CLI a second time.
if __name__ == "__main__":
    raise SystemExit(main())
