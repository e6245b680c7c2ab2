"""The zoo language: a tiny English-like grammar the base model reads during pre-training.

It has number agreement between determiner, noun and verb (morphology), verb valency
(syntax), animacy (semantics), negation (reasoning) and pronoun reference across sentences
(discourse), so the Holmes-format probing sets have something real to find in the zoo models'
representations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ANIMATE = ("cat", "dog", "bird", "girl", "boy", "hen", "fox")
INANIMATE = ("stone", "cup", "tree", "lamp", "book", "door", "box")
NOUNS = ANIMATE + INANIMATE
INTRANSITIVE = ("run", "sleep", "sing", "fall")
TRANSITIVE = ("see", "like", "take", "hold")
ADJECTIVES = ("red", "small", "old", "big")
# Determiners with their plural form: demonstratives agree with the noun in number.
DETERMINERS = {"the": "the", "this": "these", "that": "those"}


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


@dataclass(frozen=True)
class Clause:
    noun: str
    plural: bool
    verb: str
    obj: str | None
    negated: bool
    adjective: str | None
    determiner: str = "the"

    @property
    def subject(self) -> str:
        det = DETERMINERS[self.determiner] if self.plural else self.determiner
        adj = f"{self.adjective} " if self.adjective else ""
        return f"{det} {adj}{plural(self.noun) if self.plural else self.noun}"

    def text(self, agree: bool = True, with_object: bool | None = None) -> str:
        plural = self.plural if agree else not self.plural
        if self.negated:
            verb = f"{'do' if plural else 'does'} not {self.verb}"
        else:
            verb = self.verb if plural else self.verb + "s"
        use_obj = (self.obj is not None) if with_object is None else with_object
        obj = f" the {self.obj or 'cup'}" if use_obj else ""
        return f"{self.subject} {verb}{obj}."


def random_clause(rng: random.Random, negated: bool | None = None) -> Clause:
    transitive = rng.random() < 0.5
    verb = rng.choice(TRANSITIVE if transitive else INTRANSITIVE)
    return Clause(
        noun=rng.choice(NOUNS),
        plural=rng.random() < 0.5,
        verb=verb,
        obj=rng.choice(NOUNS) if transitive else None,
        negated=(rng.random() < 0.3) if negated is None else negated,
        adjective=rng.choice(ADJECTIVES) if rng.random() < 0.3 else None,
        determiner=rng.choice(("the", "the", "this", "that")),
    )


def pronoun(c: Clause) -> str:
    if c.plural:
        return "they"
    return "it" if c.noun in INANIMATE else ("she" if c.noun == "girl" else "he")


def follow_up(c: Clause, rng: random.Random, right: bool = True) -> str:
    """A second sentence whose pronoun refers back to the first sentence's subject."""
    p = pronoun(c)
    if not right:
        p = rng.choice([q for q in ("they", "it", "he", "she") if q != p])
    verb = rng.choice(INTRANSITIVE)
    return f"{p} {verb if p == 'they' else verb + 's'}."


def random_sentence(rng: random.Random) -> str:
    c = random_clause(rng)
    if rng.random() < 0.3:
        return f"{c.text()} {follow_up(c, rng)}"
    return c.text()
