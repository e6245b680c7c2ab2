"""The configuration reference is generated from the config models and must be current."""

from __future__ import annotations

from mergepipe.config.docs import render


def test_configuration_reference_is_current(repo_root):
    committed = (repo_root / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), "regenerate: python -m mergepipe.config.docs > docs/configuration.md"


def test_every_config_field_is_documented():
    from mergepipe.config import MergeSection, MethodSpec, ModelRef, OutputsSection, PipelineConfig

    for model in (PipelineConfig, MergeSection, OutputsSection, MethodSpec, ModelRef):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
