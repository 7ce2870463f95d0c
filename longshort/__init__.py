"""longshort: train a long-thought and a short-thought LLM to reason together (Long⊗Short, arXiv 2505.11827)."""

import os

# Before torch loads OpenMP: spinning worker threads make a multi-threaded CPU run 10-25x slower whenever another
# process competes for the cores (measured on 2 cores: the stages' engines, verifier pool and Ray actors do);
# passive waiting costs little on an idle machine. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Hugging Face's per-load "Loading weights" bars (one per model load, per process) bury the stage's own progress
# line; HF_HUB_DISABLE_PROGRESS_BARS=0 brings them back.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

__version__ = "0.1.0"
