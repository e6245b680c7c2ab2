"""Parameter search over merge methods (``mergepipe search``); see :mod:`mergepipe.search.run`."""
