"""The search section: the honest split refused up front, the space checked, the study resumable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mergepipe.config import load_config
from mergepipe.errors import ConfigError, MergepipeError

SPACE = {"name": "ties", "space": {"density": {"low": 0.2, "high": 0.9}}}


def write(tmp: Path, search: dict, **extra) -> Path:
    data = {"run": "s", "base_model": "zoo://base", "models": ["zoo://inc", "zoo://next"], "dtype": "float32",
            "merge": {"methods": ["task_arithmetic"]},
            "outputs": {k: str(tmp / k) for k in ("merged_models", "merge_config", "harness_results",
                                                   "holmes_results", "organized_results", "logs", "search")},
            "search": search, **extra}
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_reporting_on_a_tuned_task_is_refused_in_one_line_before_any_work(tmp_path):
    path = write(tmp_path, {"methods": [SPACE], "tune": ["zoo_inc", "zoo_next"], "report": ["zoo_next"]})
    proc = subprocess.run([sys.executable, "-m", "mergepipe", "search", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {path}: search: zoo_next is in both tune and report; report only on tasks the "
                     "search does not tune on"]
    assert not (tmp_path / "search").exists() and not (tmp_path / "merged_models").exists()


@pytest.mark.parametrize("search, message", [
    ({"methods": [SPACE], "tune": ["zoo_inc"]}, "report: no tasks to report on"),
    ({"methods": [SPACE], "report": ["zoo_inc"]}, "tune: no tasks to tune on"),
    ({"methods": [{"name": "ties", "space": {"density": {"low": 0.9, "high": 0.2}}}], "tune": ["a"], "report": ["b"]},
     "high 0.2 must be above low 0.9"),
    ({"methods": [SPACE], "tune": ["a"], "report": ["b"], "weights": {"c": 1}}, "'c', which is not a tune task"),
    ({"methods": [SPACE], "tune": ["a"], "report": ["b"], "sampler": "cmaes", "second_objective": "merge_seconds"},
     "cmaes optimises one objective"),
])
def test_bad_search_sections_are_one_line_errors(tmp_path, search, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, search))


def test_overlap_through_a_group_is_refused(tmp_path, zoo):
    from mergepipe.search.run import check_split

    config = load_config(write(tmp_path, {"methods": [SPACE], "tune": ["zoo"], "report": ["zoo_inc_mc"]}))
    with pytest.raises(ConfigError, match=r"search\.report: zoo_inc_mc shares zoo_inc_mc with search\.tune's zoo"):
        check_split(config)


@pytest.mark.parametrize("method, message", [
    ({"name": "ties", "space": {"density": {"low": 0.5, "high": 1.5}}},
     r"search.methods\[0\].space.density: 1.5 is outside \(0.0, 1.0\]"),
    ({"name": "ties", "space": {"densty": {"low": 0.5, "high": 0.9}}}, "has no parameter 'densty'.*did you mean"),
    ({"name": "slerp", "space": {"t": {"low": 0.1, "high": 0.9, "per_expert": True}}}, "per_expert is for per-model"),
    ({"name": "tie", "space": {"density": [0.5]}}, r"search.methods\[0\]: unknown merge method 'tie'"),
])
def test_space_is_checked_against_the_catalogue(tmp_path, method, message):
    from mergepipe.search.space import build_space

    config = load_config(write(tmp_path, {"methods": [method], "tune": ["zoo_inc"], "report": ["zoo_inc_mc"]}))
    with pytest.raises(ConfigError, match=message):
        build_space(config)


def test_space_names_parameters_per_method_and_per_expert(tmp_path):
    import optuna

    from mergepipe.search.space import build_space

    config = load_config(write(tmp_path, {"methods": [
        {"name": "ties", "space": {"density": {"low": 0.2, "high": 0.9}}, "parameters": {"lambda": 1.0}},
        {"name": "task_arithmetic", "space": {"weight": {"low": 0.5, "high": 1.5, "per_expert": True}}}],
        "tune": ["zoo_inc"], "report": ["zoo_inc_mc"]}))
    space = build_space(config)
    method, params = space.suggest(optuna.trial.FixedTrial(
        {"method": "task_arithmetic", "task_arithmetic.weight[0]": 0.7, "task_arithmetic.weight[1]": 1.2}))
    assert (method, params) == ("task_arithmetic", {"weight": [0.7, 1.2]})
    method, params = space.suggest(optuna.trial.FixedTrial({"method": "ties", "ties.density": 0.4}))
    assert (method, params) == ("ties", {"lambda": 1.0, "density": 0.4})
    assert [s.label for s in space.defaults()] == ["default-ties", "default-task_arithmetic"]


def test_interrupted_trials_are_proposed_again_with_their_names_and_finished_ones_never(tmp_path):
    from optuna.trial import TrialState

    from mergepipe.search.space import build_space
    from mergepipe.search.study import CANDIDATE_ATTR, counted, open_study, recover_interrupted

    config = load_config(write(tmp_path, {"methods": [SPACE], "tune": ["zoo_inc"], "report": ["zoo_inc_mc"]}))
    space = build_space(config)
    study = open_study(config, parallel=2)
    trials = [study.ask() for _ in range(3)]
    for t in trials:
        space.suggest(t)
        t.set_user_attr(CANDIDATE_ATTR, f"t{t.number:03d}-ties")
    study.tell(trials[0], [0.5])
    # a new process opens the same study: two trials were running when the old one died
    again = open_study(config, parallel=2)
    assert recover_interrupted(again) == [1, 2]
    assert counted(again) == (1, 0)
    nxt = again.ask()
    _, params = space.suggest(nxt)
    assert params["density"] == trials[1].params["density"]
    assert nxt.user_attrs[CANDIDATE_ATTR] == "t001-ties"
    assert {t.number for t in again.get_trials(states=(TrialState.COMPLETE,))} == {0}


def test_a_changed_search_refuses_to_resume_and_a_held_study_is_refused(tmp_path):
    from mergepipe.search.study import open_study, study_dir, study_lock

    path = write(tmp_path, {"methods": [SPACE], "tune": ["zoo_inc"], "report": ["zoo_inc_mc"]})
    open_study(load_config(path), parallel=1)
    changed = write(tmp_path, {"methods": [SPACE], "tune": ["zoo_next"], "report": ["zoo_inc_mc"]})
    with pytest.raises(ConfigError, match="the settings changed since study s-search started"):
        open_study(load_config(changed), parallel=1)
    config = load_config(path)
    with study_lock(study_dir(config)), pytest.raises(MergepipeError, match="is already running \\(pid "), \
            study_lock(study_dir(config)):
        pass


def test_dry_run_prints_the_space_split_and_study_and_runs_nothing(tmp_path, zoo, capsys):
    from mergepipe.cli import main

    path = write(tmp_path, {"methods": [SPACE, {"name": "dare_ties", "space": {"weight": [0.5, 1.0]}}],
                            "tune": ["zoo_inc"], "report": ["zoo_inc_mc"], "trials": 6})
    assert main(["search", "--config", str(path), "--dry-run", "--trials", "8", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "search s-search: 8 candidate(s) of ties, dare_ties (sampler tpe), 2 per round" in out
    assert "space ties: density in [0.2, 0.9]" in out and "space dare_ties: weight one of [0.5, 1.0]" in out
    assert "report tasks (never seen by the search): zoo_inc_mc" in out
    assert not (tmp_path / "merged_models").exists() and not (tmp_path / "search").exists()
    assert main(["search", "--config", str(path), "--dry-run", "--trials", "0"]) == 2
    assert "--trials: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_two_objectives_give_the_pareto_front_best_on_the_tune_objective_first():
    import optuna
    from optuna.distributions import FloatDistribution

    from mergepipe.search.run import best_trials

    study = optuna.create_study(directions=["maximize", "minimize"])
    for score, seconds in [(0.5, 1.0), (0.7, 3.0), (0.6, 0.5), (0.4, 2.0)]:
        study.add_trial(optuna.trial.create_trial(params={"density": 0.5},
                                                  distributions={"density": FloatDistribution(0.1, 0.9)},
                                                  values=[score, seconds]))
    front = best_trials(study, multi=True)
    assert [t.values for t in front] == [[0.7, 3.0], [0.6, 0.5]]  # (0.5, 1.0) and (0.4, 2.0) are dominated
    single = optuna.create_study(direction="maximize")
    for score in (0.5, 0.7, 0.7):
        single.add_trial(optuna.trial.create_trial(params={}, distributions={}, values=[score]))
    assert [t.number for t in best_trials(single, multi=False)] == [1]  # the first to reach the best
