"""mergepipe: merge fine-tuned LLMs with mergekit and measure what the merge is worth."""

__version__ = "0.1.0"
