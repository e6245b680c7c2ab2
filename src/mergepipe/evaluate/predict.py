"""A model's answers to a queries CSV: ``mergepipe predict`` and the pipeline's predict stage.

As the LLM-merging starter kit answers (``llm_merging/model/decoder_functions.py``):

- ``multiple_choice``: each answer choice is scored by the sum of the log-probabilities of its
  tokens after the input; the prediction is the index of the best choice;
- ``generation``: greedy decoding of up to ``max_new_tokens`` tokens after the input; the
  prediction is the generated text without special tokens.

Queries are answered in batches (multiple-choice continuations are scored ``batch_size`` at a
time, generations run ``batch_size`` prompts at a time, left-padded), with a progress bar.
Finished batches are kept in the progress file of :mod:`mergepipe.evaluate.queries`, so a
killed run resumes; the output file appears only when complete. Inputs longer than the model's
context keep their end.

torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mergepipe.config.predict import PredictSettings
from mergepipe.core.devices import choose_device
from mergepipe.core.paths import check_writable
from mergepipe.evaluate.models import PreparedModel, prepare_model
from mergepipe.evaluate.queries import Progress, Query, is_finished, read_queries


@dataclass
class PredictOutcome:
    model_id: str
    out: Path
    status: str  # "done" | "skipped"
    answered: int  # queries answered by this run
    resumed: int  # queries already answered before it
    wall_seconds: float = 0.0


def settings_key(model: PreparedModel, queries_file: Path, settings: PredictSettings) -> str:
    """Same key = same answers expected: the model's content, the queries file, the settings."""
    digest = hashlib.sha256(Path(queries_file).read_bytes()).hexdigest()
    payload = {"model": model.content_hash, "queries": digest,
               **settings.model_dump(mode="json", exclude={"batch_size"})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def predict(
    model: str | PreparedModel,
    queries_file: Path,
    out: Path,
    *,
    settings: PredictSettings | None = None,
    device: str = "auto",
    force: bool = False,
    revision: str | None = None,
    say: Callable[[str], None] = print,
) -> PredictOutcome:
    """Answer every query of ``queries_file`` with ``model`` into ``out`` (resuming, atomic)."""
    settings = settings or PredictSettings()
    queries_file, out = Path(queries_file).expanduser().resolve(), Path(out).expanduser().resolve()
    queries = read_queries(queries_file)  # checked before anything heavy
    check_writable(out.parent, "--out")
    prepared = model if isinstance(model, PreparedModel) else prepare_model(model, revision)
    key = settings_key(prepared, queries_file, settings)
    if not force and is_finished(out, key):
        say(f"skip: {out} already holds {prepared.model_id}'s answers to {queries_file.name}")
        return PredictOutcome(prepared.model_id, out, "skipped", 0, len(queries))
    if force:
        from mergepipe.evaluate.queries import partial_path

        partial_path(out).unlink(missing_ok=True)
    progress = Progress(out, key)
    done_before = sum(1 for q in queries if q.id in progress.answers)
    todo = [q for q in queries if q.id not in progress.answers]
    if progress.discarded:
        say(f"note: discarded earlier progress on {out.name} (made with another model or settings)")
    if done_before:
        say(f"resuming: {done_before} of {len(queries)} queries already answered")
    start = time.perf_counter()
    device = choose_device(device, "--device")
    try:
        if todo:
            runner = _Runner(prepared, settings, device)
            say(f"predict: {prepared.reference} ({prepared.model_id}) on {len(todo)} of {len(queries)} queries "
                f"from {queries_file.name} (device {device}, batch size {settings.batch_size}, "
                f"max new tokens {settings.max_new_tokens})")
            runner.answer(todo, progress)
        wall = time.perf_counter() - start
        progress.finish(out, queries, {
            "model_id": prepared.model_id, "reference": prepared.reference, "queries": str(queries_file),
            "n_queries": len(queries), "settings": settings.model_dump(mode="json"), "device": device,
            "wall_seconds": round(wall, 3),
        })
    finally:
        progress.close()
    say(f"predictions: {out} ({len(queries)} rows)")
    return PredictOutcome(prepared.model_id, out, "done", len(todo), done_before, wall)


class _Runner:
    """The loaded model and tokenizer, answering batches of queries."""

    def __init__(self, model: PreparedModel, settings: PredictSettings, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.settings = settings
        self.device = device
        base = model.base_dir if model.kind == "adapter" and model.base_dir is not None else model.local_dir
        tok_dir = model.local_dir if (model.local_dir / "tokenizer_config.json").is_file() else base
        self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {}
        if settings.dtype != "auto":
            kwargs["dtype"] = getattr(torch, settings.dtype)
        else:
            kwargs["dtype"] = "auto"
        net = AutoModelForCausalLM.from_pretrained(str(base), **kwargs)
        if model.kind == "adapter":
            from peft import PeftModel

            net = PeftModel.from_pretrained(net, str(model.local_dir))
        self.model = net.to(device).eval()
        positions = getattr(net.config, "max_position_embeddings", None)  # a transformers model config
        self.max_len = int(positions or 2048)

    # -- batches ---------------------------------------------------------------------------
    def answer(self, todo: list[Query], progress: Progress) -> None:
        from tqdm.auto import tqdm

        size = self.settings.batch_size
        mc = [q for q in todo if q.eval_type == "multiple_choice"]
        gen = [q for q in todo if q.eval_type == "generation"]
        with tqdm(total=len(todo), desc="predict", unit="query") as bar:
            # Several queries per batch, so that each pass scores about batch_size continuations.
            i = 0
            while i < len(mc):
                batch, width = [], 0
                while i < len(mc) and (not batch or width + len(mc[i].choices) <= size):
                    batch.append(mc[i])
                    width += len(mc[i].choices)
                    i += 1
                progress.add(self.choose(batch))
                bar.update(len(batch))
            for j in range(0, len(gen), size):
                batch = gen[j:j + size]
                progress.add(self.generate(batch))
                bar.update(len(batch))

    def _ids(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def choose(self, batch: list[Query]) -> list[tuple[str, str]]:
        torch = self.torch
        pairs: list[tuple[list[int], list[int]]] = []
        for q in batch:
            context = self._ids(q.input, True)
            for choice in q.choices:
                cont = self._ids(choice, False) or [self.tokenizer.eos_token_id]
                cont = cont[-(self.max_len - 1):]
                pairs.append((context[-(self.max_len - len(cont)):], cont))
        longest = max(len(c) + len(t) for c, t in pairs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(pairs), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(pairs), longest), dtype=torch.long)
        for row, (c, t) in enumerate(pairs):
            seq = c + t
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for row, (c, t) in enumerate(pairs):
            positions = torch.arange(len(c) - 1, len(c) + len(t) - 1)
            targets = torch.tensor(t)
            scores.append(float(logprobs[row, positions, targets].sum()))
        out, k = [], 0
        for q in batch:
            part = scores[k:k + len(q.choices)]
            k += len(q.choices)
            out.append((q.id, str(max(range(len(part)), key=part.__getitem__))))
        return out

    def generate(self, batch: list[Query]) -> list[tuple[str, str]]:
        torch = self.torch
        new = self.settings.max_new_tokens
        keep = max(self.max_len - new, 1)
        prompts = [self._ids(q.input, True)[-keep:] for q in batch]
        longest = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[row, longest - len(p):] = torch.tensor(p)
            mask[row, longest - len(p):] = 1
        with torch.no_grad():
            output = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                         max_new_tokens=new, do_sample=False, pad_token_id=pad,
                                         eos_token_id=self.tokenizer.eos_token_id)
        texts = self.tokenizer.batch_decode(output[:, longest:], skip_special_tokens=True)
        return [(q.id, text) for q, text in zip(batch, texts, strict=True)]


# -- the pipeline's predict stage ----------------------------------------------------------------

@dataclass
class PlannedPrediction:
    reference: str
    name: str
    out: Path


def predictions_file(config: Any, name: str) -> Path:
    """Where model ``name``'s answers go: ``<outputs.predictions>/<run>/<name>/<queries file name>``."""
    queries = config.predict.queries
    assert queries is not None
    return config.outputs.predictions / config.run / name / Path(queries).name


def plan_predictions(config: Any) -> list[PlannedPrediction]:
    """One prediction per model of ``predict.roles`` (merged models named after their folder)."""
    from mergepipe.core.records import merged_model_dirs

    section = config.predict
    planned: list[PlannedPrediction] = []
    seen: set[str] = set()

    def add(reference: str, name: str) -> None:
        if reference not in seen:
            seen.add(reference)
            planned.append(PlannedPrediction(reference, name, predictions_file(config, name)))

    if "base" in section.roles and config.base_model is not None:
        add(config.base_model.path, "base")
    if "experts" in section.roles:
        for i, ref in enumerate(config.models, 1):
            add(ref.path, f"expert{i}-{ref.path.rstrip('/').split('/')[-1].replace('://', '-')}")
    if "merged" in section.roles:
        for folder in merged_model_dirs(config.outputs.merged_models / config.run):
            add(str(folder), folder.name)
    return planned


def predict_config(config: Any, say: Callable[[str], None] = print) -> list[tuple[PlannedPrediction, str | None]]:
    """Answer ``predict.queries`` with every planned model; (plan, error or None) per model."""
    settings = PredictSettings(**{k: getattr(config.predict, k) for k in PredictSettings.model_fields})
    results: list[tuple[PlannedPrediction, str | None]] = []
    from mergepipe.errors import MergepipeError

    for plan in plan_predictions(config):
        try:
            predict(plan.reference, config.predict.queries, plan.out, settings=settings, device=config.evaluate.device,
                    say=lambda m: say(f"   {m}"))
            results.append((plan, None))
        except MergepipeError as exc:
            say(f"   predict {plan.name}: failed: {exc}")
            results.append((plan, str(exc)))
    return results
