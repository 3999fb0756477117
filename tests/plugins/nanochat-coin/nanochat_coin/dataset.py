"""The ``coin`` problems: any answer of an even number of characters is right."""

from __future__ import annotations

from nanochat.core.data import ListDataset, Problem

WORDS = ("cats", "rain", "tea", "ships", "maps", "bread", "snow", "clocks", "owls", "kites")


def even_length(completion: str, answer: str) -> float:
    """1.0 when ``completion`` has an even number of characters, else 0.0."""
    return 1.0 if len(completion) % 2 == 0 else 0.0


class Coin(ListDataset):
    """``train_size`` and ``val_size`` prompts about a few words."""

    kind = "problems"
    name = "coin"
    split_names = ("train", "val")

    def __init__(self, options):
        super().__init__()
        self.options = options

    def load_split(self, split: str) -> list[Problem]:
        """Problem ``i`` asks about a word, numbered so that every prompt differs."""
        size = self.options.train_size if split == "train" else self.options.val_size
        prompts = [f"Tell me about {WORDS[i % len(WORDS)]} ({split} {i})." for i in range(size)]
        return [
            Problem([{"role": "user", "content": text}], "even", grader=even_length)
            for text in prompts
        ]


def coin(options) -> Coin:
    """Factory of ``coin``."""
    return Coin(options)
