"""``python -m examples.lightning``: see :mod:`examples.lightning.module`."""
from .module import main

if __name__ == "__main__":
    main()
