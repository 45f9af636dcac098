"""`python -m distillery_cli`: the `distillery` command."""

from distillery_cli.cli import main

main()
