"""``python -m benchmarks.remedies``: see :mod:`benchmarks.remedies.cli`."""
from .cli import main

main()
