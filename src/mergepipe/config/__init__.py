"""The pipeline config: one typed tree (:mod:`.schema`), its loading (:mod:`.load`), the
command-line options generated from it (:mod:`.options`) and its reference (:mod:`.docs`)."""

from mergepipe.config.cluster import ClusterSection
from mergepipe.config.evaluate import EvaluateSection, HarnessSettings
from mergepipe.config.holmes import HolmesSection
from mergepipe.config.hub import HubSection
from mergepipe.config.load import (
    ENV_OVERRIDES,
    apply_overrides,
    build_config,
    env_overrides,
    format_validation_error,
    is_raw_mergekit,
    load_config,
    read_yaml,
    safe_name,
    validate_model,
    wrap_raw_mergekit,
)
from mergepipe.config.schema import (
    DEFAULT_CONFIG,
    DTYPES,
    MergeSection,
    MethodSpec,
    ModelRef,
    OutputsSection,
    PipelineConfig,
    SweepRange,
)
from mergepipe.config.search import SearchMethod, SearchParameter, SearchSection

__all__ = [
    "DEFAULT_CONFIG",
    "DTYPES",
    "ENV_OVERRIDES",
    "ClusterSection",
    "EvaluateSection",
    "HarnessSettings",
    "HolmesSection",
    "HubSection",
    "MergeSection",
    "MethodSpec",
    "ModelRef",
    "OutputsSection",
    "PipelineConfig",
    "SearchMethod",
    "SearchParameter",
    "SearchSection",
    "SweepRange",
    "apply_overrides",
    "build_config",
    "env_overrides",
    "format_validation_error",
    "is_raw_mergekit",
    "load_config",
    "read_yaml",
    "safe_name",
    "validate_model",
    "wrap_raw_mergekit",
]
