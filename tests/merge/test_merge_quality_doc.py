"""benchmarks/merge_quality.py keeps the doc blocks of the regimes a run did not measure."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.benchmark_scripts import benchmark_module

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def merge_quality():
    with benchmark_module("merge_quality") as module:
        yield module


def _block(mq, regime: str, body: str) -> str:
    begin, end = mq.regime_markers(regime)
    return f"{begin}\n\n{body}\n\n{end}"


def test_a_run_rewrites_only_the_blocks_of_the_regimes_it_ran(merge_quality, tmp_path: Path) -> None:
    mq = merge_quality
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro text\n\n## Merge quality\n\nhand-written prose\n", encoding="utf-8")
    mq.update_doc(doc, {"lora": _block(mq, "lora", "lora table v1"), "zoo": _block(mq, "zoo", "zoo table v1")})
    # A later run on another machine measured only the wide regime: the other blocks stay.
    mq.update_doc(doc, {"wide": _block(mq, "wide", "wide table v1")})
    text = doc.read_text(encoding="utf-8")
    assert "intro text" in text and "hand-written prose" in text
    for body in ("zoo table v1", "lora table v1", "wide table v1"):
        assert text.count(body) == 1, body
    assert text.index("zoo table v1") < text.index("lora table v1") < text.index("wide table v1")  # regime order
    mq.update_doc(doc, {"lora": _block(mq, "lora", "lora table v2")})
    text = doc.read_text(encoding="utf-8")
    assert "lora table v1" not in text and text.count("lora table v2") == 1
    assert "zoo table v1" in text and "wide table v1" in text
    assert text.count(mq.BEGIN) == 1 and text.count(mq.END) == 1


def test_each_regime_has_its_own_plot(merge_quality) -> None:
    plot = Path("docs/benchmark_merge_quality.png")
    assert merge_quality.plot_path(plot, "zoo") == plot
    assert merge_quality.plot_path(plot, "wide") == Path("docs/benchmark_merge_quality_wide.png")


@pytest.mark.parametrize("argv, published", [
    ([], True),
    (["--settings", "lora", "--threads", "2", "--timing-repeats", "1"], True),
    (["--seeds", "5,6,7,8", "--experts", "2"], False),
    (["--methods", "task_arithmetic,bilateral_consensus"], False),
    (["--lora-rank", "8"], False),
    (["--no-overlap"], False),
])
def test_only_a_run_of_the_published_plan_rewrites_the_docs(merge_quality, argv, published) -> None:
    mq = merge_quality
    parser = mq.build_parser()
    args = parser.parse_args(argv)
    changed = mq.resolve_outputs(args, parser)
    docs = REPO / "docs"
    assert (Path(args.doc) == docs / "benchmarks.md") is published
    assert (Path(args.plot).parent == docs) is published
    assert (Path(args.out).parent.name == "checks") is not published
    assert bool(changed) is not published
    if not published:
        assert all(arg.split()[0] in argv for arg in changed), changed


def test_an_explicit_doc_path_is_kept_for_a_check_run(merge_quality, tmp_path: Path) -> None:
    mq = merge_quality
    parser = mq.build_parser()
    args = parser.parse_args(["--seeds", "3", "--doc", str(tmp_path / "mine.md")])
    assert mq.resolve_outputs(args, parser) == ["--seeds 3"]
    assert args.doc == str(tmp_path / "mine.md")
    assert Path(args.plot).parent.name == "checks"


def test_the_rank_8_setting_is_the_lora_recipe_at_rank_8(merge_quality) -> None:
    mq = merge_quality
    args = mq.build_parser().parse_args(["--lora-lr", "1e-3"])
    lora, lora8 = mq.lora_regime(args), mq.lora8_regime(args)
    assert (lora.rank, lora.alpha, lora8.rank, lora8.alpha) == (16, 32, 8, 16)
    assert lora8.schedule == lora.schedule and lora8.targets == lora.targets  # only the rank differs
    assert lora8.key() != lora.key() and "r8_a16" in lora8.key()  # its own expert cache
    assert lora8.informative and lora8.shape == lora.shape
    assert mq.SETTINGS.index("lora8") == mq.SETTINGS.index("lora") + 1 and "lora8" in mq.REGIME_ORDER


def _run(seed: int, scores: dict[str, tuple[float, float]]) -> dict:
    skills = ("inc", "next")
    return {"seed": seed, "skills": list(skills), "methods": {
        label: {"normalised": dict(zip(skills, pair)), "mean_normalised": sum(pair) / 2, "merge_seconds": 0.1}
        for label, pair in scores.items()}}


def test_the_signal_option_is_paired_with_the_same_rivals_as_the_default(merge_quality) -> None:
    mq = merge_quality
    runs = [
        _run(0, {"task_arithmetic": (0.5, 0.7), "tsv": (0.6, 0.8), mq.OURS: (0.7, 0.8), mq.OURS_SIGNAL: (0.9, 0.9)}),
        _run(1, {"task_arithmetic": (0.4, 0.6), "tsv": (0.7, 0.7), mq.OURS: (0.6, 0.6), mq.OURS_SIGNAL: (0.5, 0.6)}),
    ]
    summary = mq.summarise(runs)
    ours, signal = summary["_paired_vs_best_rival"], summary["_signal_vs_best_rival"]
    assert ours["rival"] == signal["rival"] == "tsv"
    assert abs(ours["mean_gap"] - (10 + 0 - 10 - 10) / 4) < 1e-9
    assert abs(signal["mean_gap"] - (30 + 10 - 20 - 10) / 4) < 1e-9 and (signal["wins"], signal["losses"]) == (2, 2)
    assert [round(g, 6) for g in summary["_signal_vs_task_arithmetic"]["per_seed"]] == [30.0, 5.0]
    result = {"regime": {"name": "lora8", "described": "LoRA rank 8", "informative": True, "rival_margin": 3.0},
              "base_digest": "abc", "seeds": [0, 1], "timing_setting": "lora8 K=2",
              "method_order": list(runs[0]["methods"]), "setting_order": ["lora8 K=2"],
              "methods": {label: {"parameters": "p"} for label in runs[0]["methods"]},
              "settings": {"lora8 K=2": summary},
              "runs": {"lora8 K=2": [{**r, "expert_accuracy": {"inc": 1.0, "next": 1.0}} for r in runs]}}
    text = mq.regime_markdown(result, "plot.png")
    assert f"The same for `{mq.OURS_SIGNAL}`" in text
    assert "| lora8 K=2 | tsv | +2.5 ± " in text and "+30.0, +5.0" in text
