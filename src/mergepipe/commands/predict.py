"""``mergepipe predict MODEL --queries FILE.csv``: one model's answers, in the competition's format."""

from __future__ import annotations

import argparse
from pathlib import Path

from mergepipe.config.options import add_model_options, given, validate_with_flags
from mergepipe.config.predict import PREDICT_FIELDS, PredictSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="answer a CSV of queries (the LLM-merging starter kit's data/test.csv) into output/test.csv",
        description=(
            "Answer every query of a CSV in the LLM-merging starter kit's format (id, input, eval_type, "
            "answer_choices) with MODEL and write the starter kit's output file (id, prediction, "
            "dummy_field): the chosen answer's index for multiple_choice, the generated text for "
            "generation. Batched, with a progress bar; a killed run resumes; the output appears only "
            "when complete, and a finished file with the same model and settings is not redone."
        ),
    )
    parser.add_argument("model", metavar="MODEL",
                        help="local model dir, Hub id (org/name), zoo://NAME, or a LoRA adapter dir")
    parser.add_argument("--queries", type=Path, required=True, metavar="FILE.csv", help="the queries CSV")
    parser.add_argument("--out", type=Path, default=Path("output/test.csv"), metavar="FILE.csv",
                        help="the predictions file (default: %(default)s)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto = cuda when a GPU is visible, else cpu")
    parser.add_argument("--revision", default=None, help="Hub revision of MODEL (branch, tag or commit)")
    parser.add_argument("--force", action="store_true", help="answer again even if the file is complete")
    add_model_options(parser.add_argument_group("generation settings"), PredictSettings, PREDICT_FIELDS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mergepipe.evaluate.predict import predict

    settings = validate_with_flags(PredictSettings, {}, given(args, PREDICT_FIELDS))
    predict(args.model, args.queries, args.out, settings=settings, device=args.device, force=args.force,
            revision=args.revision)
    return 0
