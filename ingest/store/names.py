"""Generated run names in MLflow's style: ``adjective-animal-number``."""

from __future__ import annotations

import random

_ADJECTIVES = (
    "able",
    "bold",
    "brave",
    "bright",
    "calm",
    "clever",
    "eager",
    "fair",
    "gentle",
    "glad",
    "honest",
    "keen",
    "kind",
    "lively",
    "lucky",
    "merry",
    "neat",
    "proud",
    "quick",
    "quiet",
    "rare",
    "sharp",
    "smooth",
    "steady",
    "swift",
    "warm",
    "wise",
)
_ANIMALS = (
    "ant",
    "bass",
    "bear",
    "crow",
    "deer",
    "doe",
    "eel",
    "finch",
    "fox",
    "gull",
    "hare",
    "hawk",
    "koi",
    "lark",
    "lynx",
    "mole",
    "moth",
    "newt",
    "owl",
    "ram",
    "seal",
    "slug",
    "snail",
    "swan",
    "toad",
    "wasp",
    "wolf",
    "wren",
    "yak",
)


def generate() -> str:
    return (
        f"{random.choice(_ADJECTIVES)}-{random.choice(_ANIMALS)}-"
        f"{random.randint(0, 999)}"
    )
