"""``python -m examgate`` is the ``examgate`` command."""

from examgate.cli import main

main()
