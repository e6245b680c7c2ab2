#!/usr/bin/env python3
"""Organize harness and Holmes results into organized_results/ (same as ``mergepipe organize``).

Kept for those used to the original script; all options: ``mergepipe organize --help``.
"""

import sys

from mergepipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["organize", *sys.argv[1:]]))
