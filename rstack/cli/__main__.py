"""``python -m rstack.cli``: the same as the ``rstack`` command."""

from rstack.cli.app import main

if __name__ == "__main__":
    main()
