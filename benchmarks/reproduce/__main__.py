"""``python -m benchmarks.reproduce``: see :mod:`benchmarks.reproduce.cli`."""
from .cli import main

main()
