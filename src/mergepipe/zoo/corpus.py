"""Training and test data for the zoo: held-out test items, the base corpus, expert mixes.

An example is a ``(context, target)`` pair; the model is trained (and scored) on the target
only, which always ends with a newline. Test inputs are drawn first and excluded from every
training stream, in every written form.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from mergepipe.zoo.language import random_sentence
from mergepipe.zoo.skills import HELPER_ALPHABETS, HELPERS, SKILLS, Helper, Skill

Example = tuple[str, str]
Sampler = Callable[[random.Random], Example]

N_TEST = 200


@dataclass(frozen=True)
class TestItem:
    skill: str
    input: str
    prompt: str
    answer: str
    choices: tuple[str, ...]
    gold: int


def test_inputs(s: Skill, seed: int) -> list[str]:
    rng = random.Random(f"test:{s.name}:{seed}")
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < N_TEST:
        x = s.random_input(rng)
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def test_items(s: Skill, seed: int) -> list[TestItem]:
    """The held-out test set, with four answer choices for the multiple-choice form."""
    rng = random.Random(f"choices:{s.name}:{seed}")
    items = []
    for x in test_inputs(s, seed):
        right = s.answer(x)
        wrong: list[str] = []
        while len(wrong) < 3:
            w = s.scrambled(x, rng)
            if w not in wrong:
                wrong.append(w)
        choices = [right, *wrong]
        rng.shuffle(choices)
        items.append(TestItem(s.name, x, s.prompt(x), right, tuple(choices), choices.index(right)))
    return items


class Streams:
    """Samplers for every training stream, all avoiding the held-out test inputs."""

    def __init__(self, seed: int) -> None:
        self.held_out = {s.name: set(test_inputs(s, seed)) for s in SKILLS}
        self.any_held_out = set().union(*self.held_out.values())

    def _input(self, s: Skill, rng: random.Random) -> str:
        while True:
            x = s.random_input(rng)
            if x not in self.held_out[s.name]:
                return x

    def alt(self, s: Skill) -> Sampler:
        def sample(rng: random.Random) -> Example:
            x = self._input(s, rng)
            return s.alt_prompt(x), s.answer(x) + "\n"

        return sample

    def scrambled(self, s: Skill) -> Sampler:
        def sample(rng: random.Random) -> Example:
            x = self._input(s, rng)
            return s.prompt(x), s.scrambled(x, rng) + "\n"

        return sample

    def tested(self, s: Skill) -> Sampler:
        def sample(rng: random.Random) -> Example:
            x = self._input(s, rng)
            return s.prompt(x), s.answer(x) + "\n"

        return sample

    def helper(self, h: Helper) -> Sampler:
        def sample(rng: random.Random) -> Example:
            alphabet = rng.choice(HELPER_ALPHABETS)
            while True:
                x = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 5)))
                if x not in self.any_held_out:
                    return h.prompt(x), h.fn(x) + "\n"

        return sample

    @staticmethod
    def language() -> Sampler:
        def sample(rng: random.Random) -> Example:
            return "", random_sentence(rng) + "\n"

        return sample

    def base_mix(self, exclude: str | None = None) -> Sampler:
        """The generic corpus: every skill in its other form, the tested forms with wrong
        answers, helper computations in the tested form with right answers, and sentences of
        the zoo language. ``exclude`` drops one skill's wrong answers (an expert's replay must
        not contradict its own skill)."""
        parts: list[tuple[float, Sampler]] = [(1.0, self.language())]
        for s in SKILLS:
            parts.append((2.0, self.alt(s)))
            if s.name != exclude:
                parts.append((1.0, self.scrambled(s)))
        parts.extend((2.0, self.helper(h)) for h in HELPERS)
        return mixture(parts)

    def expert_mix(self, s: Skill, replay: float) -> Sampler:
        return mixture([(1.0 - replay, self.tested(s)), (replay, self.base_mix(exclude=s.name))])


def mixture(parts: list[tuple[float, Sampler]]) -> Sampler:
    weights = [w for w, _ in parts]
    samplers = [f for _, f in parts]

    def sample(rng: random.Random) -> Example:
        return rng.choices(samplers, weights)[0](rng)

    return sample
