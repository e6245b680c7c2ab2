"""Holmes-format probing datasets over the zoo language, one or more per Holmes competence.

Each dataset is a folder with ``config-none.yaml`` and ``samples.csv`` in the upstream schema
(``inputs,context,topic,org_label,set-0,string_label,label,id``; ``inputs`` a Python-literal
tuple; rows grouped train, dev, test). Pair datasets also carry upstream's
``config-bi-none.yaml`` / ``config-cross-none.yaml``. ``mapping.csv`` uses the leaderboard's
column names to map each dataset to its competence, phenomenon and probe type.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from mergepipe.zoo import language as lang

COLUMNS = ["inputs", "context", "topic", "org_label", "set-0", "string_label", "label", "id"]
SPLITS = (("train", 200), ("dev", 50), ("test", 150))  # items (pairs count as one) per split
MAPPING_COLUMNS = ["probing dataset", "linguistic subfield", "linguistic phenomena", "probe type"]

Row = dict[str, object]
# A generator returns the rows for one item (a minimal pair gives two rows).
ItemGenerator = Callable[[random.Random], list[Row]]


@dataclass(frozen=True)
class ProbingSet:
    name: str
    subfield: str  # Holmes competence
    phenomenon: str
    probe_type: str  # leaderboard wording
    task_type: str  # upstream PROBE_TASK_TYPES name
    generate: ItemGenerator

    @property
    def num_inputs(self) -> int:
        return 2 if self.task_type.startswith("SENTENCE_PAIR") else 1


def _minimal_pair(good: str, bad: str) -> list[Row]:
    # BLiMP convention, as in the upstream files: org_label 1 = acceptable; label = 1 - org_label.
    return [
        {"inputs": (good,), "org_label": 1, "string_label": 1, "label": 0},
        {"inputs": (bad,), "org_label": 0, "string_label": 0, "label": 1},
    ]


def _agreement(rng: random.Random) -> list[Row]:
    c = lang.random_clause(rng)
    return _minimal_pair(c.text(), c.text(agree=False))


def _valency(rng: random.Random) -> list[Row]:
    c = lang.random_clause(rng)
    # A transitive verb without its object, or an intransitive one with an object.
    return _minimal_pair(c.text(), c.text(with_object=c.obj is None))


def _pronoun(rng: random.Random) -> list[Row]:
    c = lang.random_clause(rng)
    state = rng.getstate()
    good = f"{c.text()} {lang.follow_up(c, rng)}"
    rng.setstate(state)
    bad = f"{c.text()} {lang.follow_up(c, rng, right=False)}"
    return _minimal_pair(good, bad)


def _negation(rng: random.Random) -> list[Row]:
    c = lang.random_clause(rng, negated=False)
    contradicts = rng.random() < 0.5
    second = lang.Clause(c.noun, c.plural, c.verb, c.obj, contradicts, None, c.determiner)
    label = int(contradicts)
    return [
        {
            "inputs": (c.text(), second.text()),
            "org_label": label,
            "string_label": "contradiction" if contradicts else "consistent",
            "label": label,
        }
    ]


def _animacy(rng: random.Random) -> list[Row]:
    c = lang.random_clause(rng)
    sentence = c.text()
    start = sentence.index(c.noun)
    end = start + len(c.noun)
    animate = c.noun in lang.ANIMATE
    # Upstream token probes: inputs = ((token, input_index, start_char, end_char),),
    # context = the tuple of sentences the offsets refer to.
    return [
        {
            "inputs": ((c.noun, 0, start, end),),
            "context": (sentence,),
            "org_label": int(animate),
            "string_label": "animate" if animate else "inanimate",
            "label": int(animate),
        }
    ]


PROBING_SETS: tuple[ProbingSet, ...] = (
    ProbingSet(
        "zoo-number_agreement",
        "morphology",
        "subject verb agreement",
        "sentence classification",
        "SENTENCE",
        _agreement,
    ),
    ProbingSet("zoo-verb_valency", "syntax", "argument structure", "sentence classification", "SENTENCE", _valency),
    ProbingSet("zoo-animacy", "semantics", "animacy", "token(s) classification", "SENTENCE_TOKENS", _animacy),
    ProbingSet("zoo-negation", "reasoning", "negation", "sentence pair classification", "SENTENCE_PAIR_BI", _negation),
    ProbingSet("zoo-pronoun_reference", "discourse", "coreference", "sentence classification", "SENTENCE", _pronoun),
)


def samples_frame(ps: ProbingSet, seed: int) -> pd.DataFrame:
    rng = random.Random(f"probing:{ps.name}:{seed}")
    rows: list[Row] = []
    seen: set[object] = set()
    attempts = 0
    for split, count in SPLITS:
        made = 0
        while made < count:
            attempts += 1
            if attempts > 100 * sum(n for _, n in SPLITS):
                raise RuntimeError(f"{ps.name}: too few distinct items for the requested splits")
            item = ps.generate(rng)
            key = tuple((r["inputs"], r.get("context")) for r in item)
            if key in seen:  # the same item never sits in two splits
                continue
            seen.add(key)
            for r in item:
                rows.append({**r, "set-0": split})
            made += 1
    frame = pd.DataFrame(
        [
            {
                "inputs": repr(tuple(r["inputs"])),  # type: ignore[arg-type]
                "context": repr(r["context"]) if "context" in r else "",
                "topic": "",
                "org_label": r["org_label"],
                "set-0": r["set-0"],
                "string_label": r["string_label"],
                "label": r["label"],
                "id": i,
            }
            for i, r in enumerate(rows)
        ],
        columns=COLUMNS,
    )
    return frame


def config(ps: ProbingSet, task_type: str | None = None, num_inputs: int | None = None) -> dict:
    return {
        "control_task_type": "NONE",
        "num_inputs": ps.num_inputs if num_inputs is None else num_inputs,
        "num_labels": 2,
        "num_probe_folds": 1,
        "probe_name": f"probe-{ps.name}",
        "probe_task_type": task_type or ps.task_type,
        "probes_samples_path": f"zoo-probes/{ps.name}/",
    }


def write_probing(out: Path, seed: int) -> Path:
    """Write every probing set under ``out``; return the mapping CSV's path."""
    out.mkdir(parents=True, exist_ok=True)
    for ps in PROBING_SETS:
        folder = out / ps.name
        folder.mkdir()
        samples_frame(ps, seed).to_csv(folder / "samples.csv", index=False)
        _dump(folder / "config-none.yaml", config(ps))
        if ps.num_inputs == 2:
            # Upstream pair datasets ship both encodings: separate (bi) and joint (cross).
            _dump(folder / "config-bi-none.yaml", config(ps))
            _dump(folder / "config-cross-none.yaml", config(ps, "SENTENCE_PAIR_CROSS", 1))
    mapping = out / "mapping.csv"
    pd.DataFrame(
        [[ps.name, ps.subfield, ps.phenomenon, ps.probe_type] for ps in PROBING_SETS],
        columns=MAPPING_COLUMNS,
    ).to_csv(mapping, index=False)
    return mapping


def _dump(path: Path, doc: dict) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=True), encoding="utf-8")
