"""``python -m rstack.cli``: the same as the ``rstack`` command."""

from rstack.cli.app import main

main()
