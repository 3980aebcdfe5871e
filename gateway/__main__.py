"""``python -m gateway`` is the ``examgate`` command."""

from gateway.cli import main

main(prog_name="examgate")
