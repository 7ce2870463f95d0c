"""longshort: train a long-thought and a short-thought LLM to reason together (Long⊗Short, arXiv 2505.11827)."""

__version__ = "0.1.0"
