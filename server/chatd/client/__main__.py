"""``python -m chatd.client``: the same as the ``chatd-client`` command."""

from chatd.client.cli import main

main(prog_name="chatd-client")
