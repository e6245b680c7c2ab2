"""The strict ``holmes:`` section of pipeline.yaml, and the probe command reading it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mergepipe.cli import main as cli_main
from mergepipe.config import HolmesSection, build_config, validate_model
from mergepipe.errors import ConfigError


def parse_holmes_section(data: dict, source: str = "config") -> HolmesSection:
    """The section validated as the loader validates it (one-line errors naming ``holmes.<key>``)."""
    return validate_model(HolmesSection, data, source, "holmes.")


def test_defaults() -> None:
    s = parse_holmes_section({})
    assert (s.engine, s.seeds, s.control_task, s.layer, s.device) == ("builtin", 5, True, -1, "auto")
    assert s.data_dir is None and s.dir is None and s.mapping_csv is None
    # Every field is documented (the docs table is generated from these descriptions).
    assert all(f.description for f in HolmesSection.model_fields.values())


def test_relative_paths_follow_the_one_rule(tmp_path: Path) -> None:
    # Relative paths resolve against the root the command runs in, like every path of the config.
    config = build_config({"holmes": {"data_dir": "probes", "mapping_csv": "m.csv", "seeds": 2}})
    s = config.resolve_paths(tmp_path).holmes
    assert s.data_dir == tmp_path / "probes" and s.mapping_csv == tmp_path / "m.csv" and s.seeds == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": 3}, r"unknown key 'holmes.seed' \(did you mean 'holmes.seeds'\?\)"),
        ({"engine": "fast"}, r"holmes.engine: Input should be 'builtin' or 'upstream'"),
        ({"seeds": 0}, r"holmes.seeds: Input should be greater than or equal to 1"),
        ({"engine": "upstream"}, r"holmes.dir must name the upstream Holmes checkout"),
        ({"version": "a/b"}, r"holmes.version: version 'a/b' must be a plain folder-like name"),
    ],
)
def test_errors_are_one_line_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_holmes_section(data, source="pipeline.yaml")


def test_probe_command_validates_the_config_section(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("holmes:\n  layers: 2\n")
    code = cli_main(["probe", "x", "--config", str(cfg)])
    assert code != 0 and "unknown key 'holmes.layers' (did you mean 'holmes.layer'?)" in capsys.readouterr().err
