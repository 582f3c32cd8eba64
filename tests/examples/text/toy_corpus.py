"""A toy corpus for the text example's command-line tests: 96 / 32 / 32 sentences of 2 to 7 words
from a 14-word vocabulary, the same for a given seed."""
import random
from pathlib import Path

WORDS = "the a cat dog sat ran on under mat log big small red blue".split()


def write_toy_corpus(root: Path, seed: int = 0) -> Path:
    """Write ``root/toy.{train,valid,test}.txt``; returns the prefix ``root/toy`` that ``--data`` takes."""
    rng = random.Random(seed)
    for split, n in (("train", 96), ("valid", 32), ("test", 32)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) for _ in range(n)]
        (root / f"toy.{split}.txt").write_text("\n".join(lines) + "\n")
    return root / "toy"
