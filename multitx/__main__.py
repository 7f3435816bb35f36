"""python -m multitx: the same as the `multitx` command (multitx/commands.py)."""

from multitx.commands import main

main()
