"""mergepipe's own merge methods, registered with mergekit by name at import.

Import this package before ``run_merge`` and the methods are usable in any mergekit config
(``merge_method: bilateral_consensus``). Importing twice is harmless: mergekit's registry
rejects duplicate names, so registration is skipped for names already present.
"""

from __future__ import annotations

from mergekit.merge_methods import registry

from mergepipe.merge.methods import bilateral

METHODS = (bilateral.bilateral_consensus_merge,)
# Read by mergepipe.merge.catalogue: one-line description and default parameters per method.
CATALOGUE_INFO = {bilateral.METHOD_NAME: bilateral.CATALOGUE_INFO}


def register_all() -> None:
    known = {method.spec.name for method in registry.registered_methods()}
    for method in METHODS:
        if method.spec.name not in known:
            registry.register(method)


register_all()

__all__ = ["CATALOGUE_INFO", "METHODS", "register_all"]
