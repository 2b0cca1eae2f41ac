"""`python -m gradcheck_cli` runs the same command line as `gradcheck`."""

import os
import sys

# `python -m` puts the current directory first on sys.path: a ./rich.py there would run as gradcheck's own
# import. gradcheck imports only its own modules and its dependencies (--impl imports the user's in a worker).
sys.path[:] = [path for path in sys.path if path not in ("", os.getcwd())]

from gradcheck_cli.cli import main  # noqa: E402 - after the path is cleaned

main(prog_name="gradcheck")
