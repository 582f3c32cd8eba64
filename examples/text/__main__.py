"""``python -m examples.text train|evaluate|generate`` (see examples/text/cli.py)."""
from .cli import main

main()
