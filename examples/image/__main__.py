"""``python -m examples.image``: see :mod:`examples.image.cli`."""
from .cli import main

if __name__ == "__main__":
    main()
