"""The zoo's synthetic skills: what each one computes and the written forms it appears in.

Every skill works on strings over its own alphabet (digits, capital letters or bracket
symbols), so experts for skills over different alphabets touch mostly different weights.
Each skill has three written forms:

- the *tested* form (``inc: 3071=`` -> ``4182``): what the lm-eval tasks ask;
- an *alternative* form (``up 3071 -> 4182``): the base model learns the computation here;
- the tested form with *scrambled* answers: the base learns the format but not the answer,
  so an expert only has to bind the tested prompt to a computation the base already knows.
  This keeps task vectors small, which is what makes merges behave like real ones.

*Helpers* are extra computations the base sees in the tested form with correct answers
(``cpy: 3071=`` -> ``3071``). They teach the base that this form asks for a computation in
general, so an expert does not have to learn that part itself: without them every expert
learned the same "stop answering at random" change, and task arithmetic counted it twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

DIGITS = "0123456789"
LETTERS = "ABCDEFGH"
SYMBOLS = "()[]{}<>"
_MIRROR = str.maketrans("()[]{}<>", ")(][}{><")


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    alphabet: str
    min_len: int
    max_len: int
    fn: Callable[[str], str]
    prompt_prefix: str  # tested form: f"{prefix} {x}=" -> answer
    alt_prefix: str  # alternative form: f"{alt} {x} -> " + answer

    def prompt(self, x: str) -> str:
        return f"{self.prompt_prefix} {x}="

    def alt_prompt(self, x: str) -> str:
        return f"{self.alt_prefix} {x} -> "

    def answer(self, x: str) -> str:
        return self.fn(x)

    def random_input(self, rng: random.Random) -> str:
        n = rng.randint(self.min_len, self.max_len)
        return "".join(rng.choice(self.alphabet) for _ in range(n))

    def scrambled(self, x: str, rng: random.Random) -> str:
        """A wrong answer with the right shape (same length and alphabet as the real one)."""
        right = self.fn(x)
        while True:
            out = "".join(rng.choice(self.output_alphabet) for _ in right)
            if out != right:
                return out

    @property
    def output_alphabet(self) -> str:
        return "".join(sorted(set(self.fn(self.alphabet)) | set(self.alphabet)))


def _shift(alphabet: str, k: int) -> Callable[[str], str]:
    table = str.maketrans(alphabet, alphabet[k:] + alphabet[:k])
    return lambda s: s.translate(table)


def _dup(s: str) -> str:
    return "".join(c + c for c in s)


def _mirror(s: str) -> str:
    return s.translate(_MIRROR)


def _sorted(s: str) -> str:
    return "".join(sorted(s))


def _first_last(s: str) -> str:
    return s[0] + s[-1]


# Order matters: the default build trains the first four experts, and the first two are the
# default pair used by the demo pipeline (one digit skill, one letter skill).
SKILLS: tuple[Skill, ...] = (
    Skill("inc", "add 1 to every digit (9 wraps to 0)", DIGITS, 3, 5, _shift(DIGITS, 1), "inc:", "up"),
    Skill("next", "replace every letter by the next one (H wraps to A)", LETTERS, 3, 5,
          _shift(LETTERS, 1), "nxt:", "then"),
    Skill("mirror", "turn every bracket around", SYMBOLS, 3, 5, _mirror, "mir:", "flip"),
    Skill("sort", "sort the digits ascending", DIGITS, 3, 5, _sorted, "srt:", "order"),
    Skill("dup", "write every digit twice", DIGITS, 2, 4, _dup, "dup:", "twice"),
    Skill("alpha", "sort the letters alphabetically", LETTERS, 3, 5, _sorted, "abc:", "rank"),
    # Shift by two: never agrees with "mirror", which swaps each bracket with its neighbour.
    Skill("rot", "replace every bracket by the one two places on in ()[]{}<>", SYMBOLS, 3, 5,
          _shift(SYMBOLS, 2), "rot:", "turn"),
    Skill("ends", "keep the first and the last letter", LETTERS, 3, 6, _first_last, "end:", "edge"),
)



@dataclass(frozen=True)
class Helper:
    """A computation the base learns in the tested form with correct answers (never tested)."""

    name: str
    prompt_prefix: str
    fn: Callable[[str], str]

    def prompt(self, x: str) -> str:
        return f"{self.prompt_prefix} {x}="


HELPER_ALPHABETS = (DIGITS, LETTERS, SYMBOLS)
HELPERS: tuple[Helper, ...] = (
    Helper("copy", "cpy:", lambda s: s),
    Helper("first", "fst:", lambda s: s[0] * len(s)),
    Helper("last", "lst:", lambda s: s[-1] * len(s)),
)

SKILL_NAMES: tuple[str, ...] = tuple(s.name for s in SKILLS)
MAX_EXPERTS = len(SKILLS)


def skill(name: str) -> Skill:
    for s in SKILLS:
        if s.name == name:
            return s
    raise KeyError(name)
