"""tuneforge: from a raw dataset to a fine-tuned, evaluated, exported LLM."""

__version__ = "0.1.0"
