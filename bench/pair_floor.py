"""How few tokens can a pair write, against the teacher's long CoT? A count, no training.

    python bench/pair_floor.py RUN_DIR [--eval 1000] [--seed 0]

For the synthetic teacher at several of its R1 dials (``bootstrap.task.*``), on the held-out problems of ``--seed``
tokenized with RUN_DIR's tokenizer (any run through ``longshort bootstrap``, e.g. ``runs/tiny``), prints the mean
tokens of the teacher's long CoT, of its concise solution, and of the smallest dialogue the cold start can teach
(the pair's floor): the long role opens with the CoT's cheapest thought, the short role writes every step in the
cold start's labelled form ("Step 2: 45 - 9 = 36") and the answer line, and each of the two turns ends with one
token. A pair within a point of the base model with a given share of its tokens needs a teacher whose floor share
is well below that share (the base model writes about as many tokens as its teacher).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from transformers import AutoTokenizer

from longshort.recipes.longshort.coldstart.compression import TeacherCompressor
from longshort.toy.task import TaskConfig, generate

TEACHERS = [
    ("shipped", {}),
    ("hesitation 1.0", {"hesitation": 1.0}),
    ("hesitation 1.0, reverify 1.0", {"hesitation": 1.0, "reverify": 1.0}),
    ("redundancy 1.0, hesitation 1.0, reverify 1.0", {"redundancy": 1.0, "hesitation": 1.0, "reverify": 1.0}),
    ("the same, checks_per_step 3", {"redundancy": 1.0, "hesitation": 1.0, "reverify": 1.0, "checks_per_step": 3}),
]
TURN_ENDS = 2  # one END_TURN (long) and one EOS (short)


def short_role_floor(rec: dict) -> str:
    """Every step as the cold start's short role writes it (its own compressor, labelled), then the answer line."""
    compressor = TeacherCompressor(rec, step_labels=True)
    return compressor.compress(list(range(len(rec["thoughts"])))) + "\n" + compressor.answer_line


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(str(args.run_dir / "bootstrap" / "tokenizer"))

    def count(text: str) -> int:
        return len(tok(text)["input_ids"])

    print(f"{'teacher':46s} {'teacher':>8s} {'concise':>15s} {'pair floor':>15s}")
    for name, dials in TEACHERS:
        _, problems = generate(TaskConfig(seed=args.seed, n_train=0, n_eval=args.eval, **dials))
        teacher = statistics.mean(count(r["long_cot"]) for r in problems)
        concise = statistics.mean(count(r["solution"]) for r in problems)
        floor = statistics.mean(min(count(t["text"]) for t in r["thoughts"]) + count(short_role_floor(r))
                                + TURN_ENDS for r in problems)
        print(f"{name:46s} {teacher:8.1f} {concise:6.1f} ({concise / teacher:5.1%}) {floor:6.1f} ({floor / teacher:5.1%})")


if __name__ == "__main__":
    main()
