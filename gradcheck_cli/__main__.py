"""`python -m gradcheck_cli` runs the same command line as `gradcheck`."""

from gradcheck_cli.cli import main

main(prog_name="gradcheck")
