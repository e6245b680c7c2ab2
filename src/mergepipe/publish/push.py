"""Publish a run's merged models: the one loop that ``mergepipe push`` and ``mergepipe run`` share.

Each model gets its card (with the evaluation table once organized results exist) and is
uploaded; one failure does not stop the others. Detailed logs (ours and huggingface_hub's) also
go to ``logs/<run>/push.log``; the token appears in neither.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mergepipe.config import HubSection
from mergepipe.errors import MergepipeError
from mergepipe.publish.card import eval_table_from_organized
from mergepipe.publish.hub import PushResult, push_merged_model

LOG_FILE = "push.log"
log = logging.getLogger(__name__)


@dataclass
class PushOutcome:
    name: str
    model_dir: Path
    result: PushResult | None = None
    error: MergepipeError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Also write detailed logs (ours and huggingface_hub's) to ``path``; console output unchanged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    touched: list[tuple[logging.Logger, int, list[tuple[logging.Handler, int]]]] = []
    for logger in (logging.getLogger(), logging.getLogger("huggingface_hub"), logging.getLogger("mergepipe")):
        shown = logger.getEffectiveLevel()
        # Pin existing (console) handlers to what they showed before, then open the logger up.
        handlers = [(h, h.level) for h in logger.handlers]
        for h, level in handlers:
            if level == logging.NOTSET:
                h.setLevel(shown)
        touched.append((logger, logger.level, handlers))
        logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        for logger, level, handlers in touched:
            logger.setLevel(level)
            for h, old in handlers:
                h.setLevel(old)


def publish_models(
    models: list[tuple[str, Path]],
    settings: HubSection,
    *,
    run: str,
    merge_config_dir: Path,
    organized_dir: Path | None,
    log_file: Path,
    say: Callable[[str], None] = print,
) -> list[PushOutcome]:
    """Push every ``(name, folder)``; ``organized_dir`` given: cards carry the evaluation table."""
    outcomes: list[PushOutcome] = []
    with log_to_file(log_file):
        for name, model_dir in models:
            table = eval_table_from_organized(organized_dir, run, name) if organized_dir is not None else None
            try:
                result = push_merged_model(model_dir, settings, run=run, results_table=table,
                                           merge_config_dir=merge_config_dir)
            except MergepipeError as exc:
                log.info("failed: %s", exc)
                outcomes.append(PushOutcome(name, model_dir, error=exc))
                continue
            extra = ", local copy deleted" if result.deleted_local else ""
            say(f"pushed {name} -> {result.url} (commit {result.commit_oid[:12]}{extra})")
            outcomes.append(PushOutcome(name, model_dir, result=result))
    return outcomes
