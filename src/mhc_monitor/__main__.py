"""`python -m mhc_monitor` runs the command line."""

from .cli import main

main()
