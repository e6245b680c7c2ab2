"""mergepipe's own merge methods and the 2025 data-free baselines, registered with mergekit by name
at import.

Import this package before ``run_merge`` and the methods are usable in any mergekit config
(``merge_method: bilateral_consensus``, ``tsv``, ``iso_c``, ``iso_cts``, ``wudi``). Importing
twice is harmless: mergekit's registry rejects duplicate names, so registration is skipped for
names already present.
"""

from __future__ import annotations

from mergekit.merge_methods import registry

from mergepipe.merge.methods import bilateral, iso, tsv, wudi

METHODS = (
    bilateral.bilateral_consensus_merge,
    tsv.tsv_merge,
    iso.iso_c_merge,
    iso.iso_cts_merge,
    wudi.wudi_merge,
)
# Read by mergepipe.merge.catalogue: layout, one-line description and default parameters per method.
CATALOGUE_INFO = {
    bilateral.METHOD_NAME: bilateral.CATALOGUE_INFO,
    tsv.METHOD_NAME: tsv.CATALOGUE_INFO,
    **iso.CATALOGUE_INFO,
    wudi.METHOD_NAME: wudi.CATALOGUE_INFO,
}


def register_all() -> None:
    known = {method.spec.name for method in registry.registered_methods()}
    for method in METHODS:
        if method.spec.name not in known:
            registry.register(method)


register_all()

__all__ = ["CATALOGUE_INFO", "METHODS", "register_all"]
