"""One module per CLI subcommand. Each defines ``register(subparsers)``.

A module's ``register`` adds its parser and sets ``func`` to a callable ``(args) -> int``.
The list of modules lives in :mod:`mergepipe.cli`.
"""
