"""Answer extraction and equivalence on realistic LaTeX, time limits, threads, Ray, and real benchmark files."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from builders import ROOT, benchmark_file

from longshort.data.problems import ProblemSource, load_problems
from longshort.data.verify import Verifier, VerifyConfig, extract_answer, judge, verify


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $x = \boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),  # nested braces
        (r"first \boxed{1}, then corrected: \boxed{2}.", "2"),  # the last box wins
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"\boxed 5", "5"),
        (r"thus $\boxed 12$.", "12"),
        (r"\fbox{7}", "7"),
        (r"or $\framebox{204}$ minutes", "204"),
        (r"\boxed{3} and later \boxed{4", "3"),  # an unclosed box is no answer; the last complete one is
        (r"\boxed{} so \boxed{8}", "8"),
        ("The answer is $\\frac{1}{2}$.", r"\frac{1}{2}"),
        ("Therefore, the answer is 3.5.", "3.5"),
        ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("**Answer:** 42", "42"),
        ("So the final answer is **7**.", "7"),
        ("**Final answer**: \\(x^2\\)", "x^2"),
        ("she makes 9 * 2 = $18 a day.\n#### 18", "18"),
        ("#### 1,000", "1,000"),
        ("Answer: B) the second option", "B) the second option"),
        (r"the answer is 7, not \boxed{8}", "8"),  # a box beats any cue
        ("I could not finish the computation", None),
        ("the answer is", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "gold", "correct"),
    [
        (r"so $x=\boxed{\dfrac{3}{4}}$.", "0.75", True),  # \dfrac vs decimal
        (r"\boxed{0.75}", r"\frac34", True),
        (r"\boxed{1/2}", r"\frac{1}{2}", True),
        (r"\boxed{\frac{1}{2}}", r"-\frac{1}{2}", False),
        (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", True),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", True),
        (r"\boxed{3.14159265}", r"\pi", True),
        (r"\boxed{3.14}", r"\pi", False),  # too coarse to be pi
        (r"\boxed{6\pi}", r"6\pi", True),
        (r"\boxed{\{2, 1\}}", r"\{1,2\}", True),  # sets ignore order
        (r"\boxed{2, 1}", "1,2", True),
        (r"\boxed{(1, 2]}", "(1,2]", True),  # intervals
        (r"\boxed{[1, 2]}", "(1,2]", False),
        (r"\boxed{(-\infty, 2) \cup (3, \infty)}", r"(-\infty,2)\cup(3,\infty)", True),
        (r"\boxed{\begin{pmatrix} 0.2 \\ -3.6 \end{pmatrix}}", r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}", True),
        (r"\boxed{x^2+2x+1}", "(x+1)^2", True),
        (r"\boxed{x = 5}", "5", True),
        (r"\boxed{1 \pm \sqrt{19}}", r"1+\sqrt{19}, 1-\sqrt{19}", True),
        (r"\boxed{90}", r"90^\circ", True),  # degrees
        (r"\boxed{90^{\circ}}", "90", True),
        (r"\boxed{5\text{ cm}}", "5", True),  # units
        (r"\boxed{5\text{ cm}}", "6", False),
        (r"\boxed{10 \text{ dollars}}", r"\$10", True),
        (r"\boxed{25\%}", "25", True),  # percent
        (r"\boxed{Evelyn}", r"\text{Evelyn}", True),  # text answers
        (r"\boxed{\text{Bob}}", r"\text{Evelyn}", False),
        (r"\boxed{Cold atomic interstellar medium.}", "Cold atomic interstellar medium.", True),  # a period on both
        (r"\boxed{Cold atomic interstellar medium}", "Cold atomic interstellar medium.", True),
        (r"\boxed{\text{(2S,3R)-2,3-dibromo-3-phenylpropanoic  acid}}", "(2S,3R)-2,3-dibromo-3-phenylpropanoic acid",
         True),  # text equality first: math-verify can time out on a long name
        (r"\boxed{033}", "33", True),
        ("#### 1,000", "1000", True),
        (r"\boxed{-2}", "2", False),
        (r"\boxed{6}", 5, False),
        ("The answer is (C).", "C", True),  # multiple choice
        (r"\boxed{\text{(C)}}", "C", True),
        ("C) 42", "C", True),
        (r"\boxed{C}", r"\text{(C)}", True),
        (r"\boxed{D}", "C", False),
        (r"\boxed{CD}", "C", False),
        (r"\boxed{10^-11 eV}", "10^-4 eV", False),  # a bare negative power is read whole, not as 10^{-1}
        (r"\boxed{10^{-4} eV}", "10^-4 eV", True),
        (r"\boxed{Warm ionized medium}", "Cold atomic interstellar medium", False),  # text: never math-verify
        (r"\boxed{state 10 of the atom}", "10", False),  # a number inside words is not the number
        ("42", 42, True),  # a bare answer
        (r" \frac12 ", "0.5", True),
        ("The computation gives 42 after all the steps above are put together with care", "42", False),  # too long
    ],
)
def test_judge(verifier, prediction, gold, correct):
    verdict = verifier.judge(prediction, gold)
    assert verdict.correct is correct, verdict
    assert verdict.reason in (("correct",) if correct else ("wrong", "no_answer"))


def test_no_answer_is_counted(verifier):
    before = verifier.counts["no_answer"]
    verdict = verifier.judge("Let me think about it.\nFirst, note that", "3")
    assert (verdict.answer, verdict.correct, verdict.reason) == (None, False, "no_answer")
    assert verifier.counts["no_answer"] == before + 1


def test_judge_many_keeps_order_and_checks_lengths(verifier):
    verdicts = verifier.judge_many([r"\boxed{1}", r"\boxed{2}", r"\boxed{\frac{6}{2}}"], ["1", "3", "3"])
    assert [v.correct for v in verdicts] == [True, False, True]
    with pytest.raises(ValueError, match="2 predictions, 1 gold answers"):
        verifier.judge_many(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="1 finished flags"):
        verifier.judge_many(["1", "2"], ["1", "2"], finished=[True])


def test_a_response_cut_at_its_limit_is_wrong_whatever_it_says(verifier):
    """The one grading rule for every system: only a response that ended on its own can be right."""
    texts, golds = [r"so \boxed{7}", r"so \boxed{7}", r"so \boxed{8}"], ["7", "7", "7"]
    verdicts = verifier.judge_many(texts, golds, finished=[True, False, False])
    assert [(v.answer, v.correct, v.reason) for v in verdicts] == [("7", True, "correct"), ("7", False, "cut"),
                                                                   ("8", False, "cut")]
    assert [v.correct for v in verifier.judge_many(texts, golds)] == [True, True, False]  # no flags: text only


def test_slow_check_times_out_counts_wrong_and_pool_recovers():
    # 9^(9^(9^9)) makes sympy do big-integer arithmetic that no signal can interrupt; the worker is killed.
    with Verifier(VerifyConfig(timeout_s=30, workers=1)) as v:
        start = time.monotonic()
        verdict = v.judge(r"\boxed{9^{9^{9^{9}}}}", "1", timeout_s=1.0)
        assert time.monotonic() - start < 10
        assert (verdict.correct, verdict.reason) == (False, "timeout")
        assert v.counts["timeout"] == 1
        assert v.verify(r"\boxed{\frac{1}{2}}", "0.5")  # a fresh worker took over


def test_dead_worker_counts_as_error_and_is_replaced():
    with Verifier(VerifyConfig(workers=1)) as v:
        assert v.verify(r"\boxed{\frac{2}{4}}", "0.5")
        (worker,) = v._idle
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.join(5)
        verdict = v.judge(r"\boxed{\frac{2}{4}}", "0.5")
        assert (verdict.correct, verdict.reason) == (False, "error")
        assert v.counts["error"] == 1
        assert v.verify(r"\boxed{\frac{2}{4}}", "0.5")


def _judge_in_child(v: Verifier, queue) -> None:
    queue.put(v.judge(r"\boxed{\frac{2}{4}}", "0.5").reason)


def test_verifier_keeps_working_in_a_forked_child():
    # e.g. a data loader worker forked after the parent checked answers: the parent's pipes and fork
    # server are not the child's to use, so the child starts workers of its own.
    import multiprocessing

    with Verifier(VerifyConfig(workers=1)) as v:
        assert v.verify(r"\boxed{\frac{2}{4}}", "0.5")
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_judge_in_child, args=(v, queue))
        child.start()
        assert queue.get(timeout=120) == "correct"
        child.join(30)
        assert v.verify(r"\boxed{\frac{2}{4}}", "0.5")


def test_verify_from_threads():
    cases = [(rf"\boxed{{\frac{{{2 * i}}}{{2}}}}", str(i), True) for i in range(24)]
    cases += [(rf"\boxed{{{i}.5}}", str(i), False) for i in range(24)]
    random.Random(0).shuffle(cases)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: (verify(c[0], c[1]), threading.current_thread().name), cases))
    assert [ok for ok, _ in results] == [c[2] for c in cases]
    assert all(name != "MainThread" for _, name in results)


def test_verify_in_threaded_ray_actor():
    ray = pytest.importorskip("ray")
    repo = str(ROOT)
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:

        @ray.remote(max_concurrency=4)  # a threaded actor: methods run off the main thread
        class Judge:
            def check(self, prediction, gold):
                from longshort.data.verify import verify

                return verify(prediction, gold), threading.current_thread() is threading.main_thread()

        actor = Judge.remote()
        refs = [actor.check.remote(rf"\boxed{{\dfrac{{{i}}}{{4}}}}", str(i / 4)) for i in range(8)]
        refs.append(actor.check.remote(r"\boxed{\sqrt{2}}", "1.5"))
        results = ray.get(refs, timeout=120)
    finally:
        ray.shutdown()
    assert [ok for ok, _ in results] == [True] * 8 + [False]
    assert not any(on_main for _, on_main in results)


def test_math500_gold_solutions_verify_and_shuffled_do_not(verifier):
    problems, _ = load_problems(ProblemSource(path=str(benchmark_file("math500.jsonl"))))
    start = time.monotonic()
    own = verifier.judge_many([p.solution for p in problems], [p.answer for p in problems])
    # Each extracted answer once more straight through math-verify (judge takes a shortcut on identical strings):
    # every gold answer must parse, and equal itself.
    with ThreadPoolExecutor(2) as pool:
        reparsed = list(pool.map(lambda p: verifier._check(extract_answer(p.solution), p.answer, 5.0), problems))
    perm = list(range(len(problems)))
    random.Random(0).shuffle(perm)
    pairs = [(problems[i].solution, problems[j].answer) for i, j in enumerate(perm)
             if problems[i].answer != problems[j].answer]  # a pair of identical gold answers is a true match
    shuffled = verifier.judge_many([s for s, _ in pairs], [a for _, a in pairs])
    own_rate = sum(v.correct for v in own) / len(own)
    reparsed_rate = sum(v.correct for v in reparsed) / len(reparsed)
    false_rate = sum(v.correct for v in shuffled) / len(shuffled)
    print(f"\nMATH-500: gold solutions verify {own_rate:.1%}, reparsed {reparsed_rate:.1%}; shuffled pairs "
          f"accepted {false_rate:.1%} of {len(pairs)}; {time.monotonic() - start:.1f}s")
    assert own_rate >= 0.99, [(v.answer, p.answer) for v, p in zip(own, problems, strict=True) if not v.correct]
    assert reparsed_rate >= 0.99
    assert false_rate <= 0.01, [(v.answer, a) for v, (_, a) in zip(shuffled, pairs, strict=True) if v.correct]
    assert all(v.reason != "timeout" for v in own + reparsed + shuffled)


def test_gsm8k_worked_solutions_verify_against_preset_answers(verifier):
    import json

    path = benchmark_file("gsm8k_test.jsonl")
    raw = [json.loads(line)["answer"] for line in path.read_text(encoding="utf-8").splitlines()]
    problems, _ = load_problems(ProblemSource(path=str(path)))
    verdicts = verifier.judge_many(raw, [p.answer for p in problems])
    assert all(v.correct for v in verdicts), [v for v in verdicts if not v.correct][:5]
    assert not verifier.judge_many(raw[1:] + raw[:1], [p.answer for p in problems])[0].correct


def test_aime24_boxed_solutions_verify_against_integer_answers(verifier):
    problems, _ = load_problems(ProblemSource(path=str(benchmark_file("aime24.jsonl"))))
    boxed = [p for p in problems if "box" in p.solution]  # some human solutions end in prose, with no box
    verdicts = verifier.judge_many([p.solution for p in boxed], [p.answer for p in boxed])  # e.g. \boxed{033} vs 33
    assert len(boxed) >= 20
    assert all(v.correct for v in verdicts), [(v.answer, p.answer) for v, p in zip(verdicts, boxed, strict=True)]


def test_module_level_judge_uses_shared_pool():
    verdict = judge(r"The area is $\boxed{12\sqrt{3}}$ square units.", r"12 \sqrt 3")
    assert (verdict.answer, verdict.correct, verdict.reason) == (r"12\sqrt{3}", True, "correct")
    assert not verify(r"\boxed{12}", r"12\sqrt{3}", timeout_s=10)


SCRIPT = """
from longshort.data.verify import shared_verifier
print("script body ran", flush=True)
v = shared_verifier()
print([x.correct for x in v.judge_many(["\\\\boxed{\\\\frac{1}{2}}", "\\\\boxed{0.5}", "\\\\boxed{3}"], ["0.5", "1/2", "4"])])
print(sorted(v.counts.items()))
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_a_script_without_a_main_guard_gets_real_verdicts(tmp_path, how):
    """Worker processes never re-run the caller's script (no `if __name__ == "__main__":` guard, or stdin)."""
    import subprocess
    import sys

    path = tmp_path / "user_script.py"
    path.write_text(SCRIPT)
    args, stdin = ([sys.executable, str(path)], None) if how == "file" else ([sys.executable, "-"], SCRIPT)
    out = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["script body ran", "[True, True, False]", "[('correct', 2), ('wrong', 1)]"]
    assert "counted wrong" not in out.stderr
