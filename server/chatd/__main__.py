"""``python -m chatd``: the same as the ``chatd`` command."""

from chatd.cli import main

if __name__ == "__main__":
    main(prog_name="chatd")
