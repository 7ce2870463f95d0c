"""Builders the tests share: real tiny tokenizers, models and run directories, scripted engines, repo paths.

Imported as ``from builders import ...`` (``tests/`` is on the path: pytest puts the folder of the root
``conftest.py`` there). Pytest fixtures shared by several test files live in ``conftest.py``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
from pathlib import Path

from longshort.data.protocol import Message, add_protocol_tokens, render
from longshort.engines.base import Engine, GenerationRequest, GenerationResult, Sample
from longshort.toy.task import TaskConfig, generate
from longshort.toy.task import write_jsonl as write_task_jsonl
from longshort.toy.tiny import (
    TinyModelConfig,
    TokenizerConfig,
    build_model,
    save_pretrained,
    task_texts,
    train_tokenizer,
)
from longshort.training.sft_data import SFTExample

ROOT = Path(__file__).resolve().parents[1]  # the checkout
BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"  # public benchmark files, when ../shared is present


def benchmark_file(name: str) -> Path:
    """A public benchmark file from ../shared, or a skip that says where it is expected."""
    import pytest

    path = BENCHMARKS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared benchmark files live at ../shared next to the repo)")
    return path

CORPUS = [
    "what is two plus two ? it is four .",
    "the cat sat on the mat and the dog sat on the log .",
    "think step by step : first add the tens , then add the ones .",
    "the answer is 42 because six times seven is forty two .",
    "long thoughts explore ; short thoughts conclude quickly .",
]


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    add_protocol_tokens(fast)
    return fast


def build_model_dir(path: Path, seed: int = 0, *, tie: bool = True, hidden: int = 128, positions: int = 512) -> Path:
    """Save a tiny random Qwen2 model (2 layers, 2 heads, ``hidden`` wide) + protocol tokenizer to ``path``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden, num_attention_heads=2, num_key_value_heads=2, head_dim=hidden // 2,
        intermediate_size=2 * hidden, num_hidden_layers=2, max_position_embeddings=positions, tie_word_embeddings=tie,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def toy_examples(n: int, seed: int = 0) -> list[SFTExample]:
    """Arithmetic chats of varied length: a user question, then an assistant answer (trained)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        pad = " ".join(rng.choice(["the", "cat", "sat", "on", "mat"]) for _ in range(rng.randint(0, 12)))
        out.append(SFTExample(f"ex{i}", [Message("user", f"what is {a} plus {b} ? {pad}"),
                                          Message("assistant", f"it is {a + b} .")], ("assistant",)))
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path

OPS = {"add": ("Add", "+", lambda a, b: a + b), "mul": ("Multiply by", "*", lambda a, b: a * b)}


def problems(n: int, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """(problem, answer, long thought, short answer turn)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        word, sym, fn = OPS[rng.choice(sorted(OPS))]
        q = f"Begin with {a}. {word} {b}. What is the result?"
        out.append((q, str(fn(a, b)), f"compute {a} {sym} {b}", f"{a} {sym} {b} = {fn(a, b)} so \\boxed{{{fn(a, b)}}}"))
    return out


def write_problems(path: Path, items) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, item in enumerate(items):
            f.write(json.dumps({"id": f"{path.stem}-{i}", "problem": item[0], "answer": item[1]}) + "\n")
    return path


def _teach_format(model_dir: Path, items, steps: int, seed: int) -> None:
    teach(model_dir, [([Message("user", q), Message("long", thought), Message("short", answer)], {"long", "short"})
                      for q, _, thought, answer in items], steps, seed)


def teach(model_dir: Path, dialogues: list[tuple[list[Message], set[str]]], steps: int, seed: int,
          lr: float = 3e-3) -> None:
    """Full-batch SFT of the model in ``model_dir`` on (messages, trained roles) dialogues, saved in place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    rows = []
    for messages, roles in dialogues:
        r = render(messages, tok)
        rows.append((r.ids, r.loss_mask(roles)))
    width = max(len(i) for i, _ in rows)
    ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in rows])
    mask = torch.tensor([m + [0] * (width - len(m)) for _, m in rows])
    attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                                reduction="none")
        loss = (nll * mask[:, 1:].reshape(-1)).sum() / mask[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir)


def build_run_dir(root: Path, steps: int = 60) -> Path:
    """``root/sft/{long,short}/model`` (format-taught pair) and ``root/bootstrap/data/{train,eval,dev}.jsonl``."""
    import shutil

    items = problems(24)
    base = build_model_dir(root / "sft" / "long" / "model", seed=1)
    _teach_format(base, items, steps, seed=1)
    shutil.copytree(base, root / "sft" / "short" / "model")
    write_problems(root / "bootstrap" / "data" / "train.jsonl", items[:16])
    write_problems(root / "bootstrap" / "data" / "eval.jsonl", items[16:])
    write_problems(root / "bootstrap" / "data" / "dev.jsonl", items[16:])  # what RL's progress eval reads
    return root


class ScriptedEngine(Engine):
    """A deterministic engine: ``reply(request) -> token ids`` (cut at ``max_tokens``), logprobs -0.1, -0.2, ...
    It checks the episode controller's bookkeeping exactly; the real engines are exercised in test_rl."""

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[list[GenerationRequest]] = []

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        self.calls.append(list(requests))
        out = []
        for r in requests:
            ids = list(self.reply(r))[: r.params.max_tokens]
            lps = [-0.1 * (k + 1) for k in range(len(ids))]
            out.append(GenerationResult(r.request_id, list(r.prompt_ids), [Sample(ids, "", lps, "stop")]))
        return out

    def update_weights(self, named_tensors, version: int) -> None:
        raise NotImplementedError

def task_records(n: int = 40, seed: int = 0, **task) -> list[dict]:
    train, _ = generate(TaskConfig(seed=seed, n_train=n, n_eval=0, **task))
    return train


def tiny_model_dir(path: Path, records: list[dict] | None = None, layers: int = 1) -> Path:
    """A tiny random Qwen2 + the task tokenizer (protocol tokens, chat template) saved to ``path``."""
    import torch

    torch.set_num_threads(2)
    records = records or task_records(200)
    tok = train_tokenizer(task_texts(records, 200), TokenizerConfig(vocab_size=400))
    model = build_model(TinyModelConfig(layers=layers, intermediate=128, max_positions=512), tok)
    return save_pretrained(model, tok, path)


def run_dir_with_task(root: Path, records: list[dict], model_dir: Path | None = None) -> Path:
    """A run directory laid out like ``longshort bootstrap`` leaves it (data + optionally the base model)."""
    write_task_jsonl(records, root / "bootstrap" / "data" / "train.jsonl")
    if model_dir is not None:
        (root / "bootstrap").mkdir(parents=True, exist_ok=True)
        link = root / "bootstrap" / "base_model"
        if not link.exists():
            link.symlink_to(model_dir, target_is_directory=True)
    return root


def sleeping_rank(info, pid_dir: str, report=None):
    """A launched rank that records its pid and then sleeps (for tests that kill the process that launched it)."""
    import os
    import time

    (Path(pid_dir) / f"rank{info.rank}.pid").write_text(str(os.getpid()))
    time.sleep(120)


def listening_addresses(pids) -> dict[int, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """``{pid: [address, ...]}``: where each process listens for TCP (its socket fds matched to /proc/net/tcp*)."""
    out = {}
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            tables = {t: open(f"/proc/{pid}/net/{t}").read().splitlines()[1:] for t in ("tcp", "tcp6")}
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        for lines in tables.values():
            for cols in map(str.split, lines):
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    raw = bytes.fromhex(cols[1].split(":")[0])  # 32-bit words in host (little-endian) order
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    out.setdefault(pid, []).append(ipaddress.ip_address(raw))
    return out


def loopback(ip) -> bool:
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


# CPU kernel sets a learning test runs under: PyTorch and oneDNN pick their kernels by instruction set when torch is
# imported, and can be told to pick narrower ones; a user on another CPU computes like one of these.
KERNEL_SETS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def _workers_capability() -> str | None:
    """Torch's CPU capability in the Ray workers of this process's Ray instance (training ranks run there)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None

    def capability() -> str:
        import torch

        return torch.backends.cpu.get_cpu_capability()

    return ray.get(ray.remote(num_cpus=0)(capability).remote())


def _kernel_child(out_q, fn, args) -> None:
    import torch

    try:
        result = fn(*args)
        capability, workers = torch.backends.cpu.get_cpu_capability(), _workers_capability()
        if workers not in (None, capability):  # the ranks computed under other kernels than asked
            capability = f"{capability}, but {workers} in its Ray workers"
        out_q.put(("ok", capability, result))
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
        import traceback

        out_q.put(("error", traceback.format_exc(), repr(exc)))


def under_kernel_set(name: str, fn, *args):
    """(torch's CPU capability, ``fn(*args)``) computed under kernel set ``name``: in this process for ``native``,
    else in a fresh interpreter whose environment selects the narrower kernels before torch is imported (``fn`` and
    ``args`` must be picklable; a non-daemon process, so ``fn`` may start processes of its own)."""
    import multiprocessing

    import torch

    if not KERNEL_SETS[name]:
        return torch.backends.cpu.get_cpu_capability(), fn(*args)
    native = torch.backends.cpu.get_cpu_capability()
    if native == KERNEL_SETS[name]["ONEDNN_MAX_CPU_ISA"]:  # an AVX2-only CPU: the native run computes exactly this
        import pytest

        pytest.skip(f"kernel set {name}: this CPU's own kernels are already {native} (no AVX-512), so the native "
                    "run of this test covers it; it runs on a CPU with wider kernels")
    ctx = multiprocessing.get_context("spawn")
    saved = {k: os.environ.get(k) for k in KERNEL_SETS[name]}
    os.environ.update(KERNEL_SETS[name])
    try:
        out_q = ctx.Queue()
        proc = ctx.Process(target=_kernel_child, args=(out_q, fn, args))
        proc.start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    import queue

    while True:  # a child that dies without a word (a crash in native code) fails here, not at the test timeout
        try:
            kind, first, second = out_q.get(timeout=5)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"under kernel set {name}: the child died with exit code {proc.exitcode}") from None
    proc.join()
    if kind == "error":
        raise RuntimeError(f"under kernel set {name}: {second}\n{first}")
    return first, second


def free_cpus_return_to(total: float, timeout_s: float = 20.0) -> bool:
    """Whether the connected Ray cluster's free CPUs come back to ``total`` (actors and placement groups freed: Ray
    frees them asynchronously)."""
    import time

    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) == total:
            return True
        time.sleep(0.2)
    return False


def aligned_partner(tok, added: list[str], first: Path, tmp: Path, *, tie: bool, seed: int = 0):
    """A second role whose added tokens differ from ``first``'s (as Qwen2.5-Instruct's against R1-Distill-Qwen's): a
    tiny Llama on ``tok`` plus ``added``, prepared on its own (refused as ``first``'s partner) and with
    ``--vocab-of first`` (accepted, with ``first``'s exact vocabulary and its own rows at their new ids).
    Returns (its model before alignment, its tokenizer, the aligned dir)."""
    import pytest
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from longshort.cli import main
    from longshort.core.errors import LongshortError
    from longshort.data.tokenizers import check_shared_tokenizer

    tok.add_tokens(added, special_tokens=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=1, num_attention_heads=1, head_dim=64,
                                         tie_word_embeddings=tie))
    src = tmp / "partner-src"
    model.save_pretrained(src)
    tok.save_pretrained(src)
    assert main(["prepare-model", str(src), str(tmp / "alone")]) == 0
    with pytest.raises(LongshortError, match="different ids.*--vocab-of"):
        check_shared_tokenizer({"long": first, "short": tmp / "alone"}, "rl")
    partner = tmp / "partner"
    assert main(["prepare-model", str(src), str(partner), "--vocab-of", str(first)]) == 0
    check_shared_tokenizer({"long": first, "short": partner}, "rl")
    ref, old = AutoTokenizer.from_pretrained(first).get_vocab(), tok.get_vocab()
    assert AutoTokenizer.from_pretrained(partner).get_vocab() == ref
    aligned = AutoModelForCausalLM.from_pretrained(partner)
    kept = [t for t in old if t in ref]
    for before, after in ((model.get_input_embeddings(), aligned.get_input_embeddings()),
                          (model.get_output_embeddings(), aligned.get_output_embeddings())):
        assert torch.equal(after.weight[[ref[t] for t in kept]], before.weight[[old[t] for t in kept]])
    return model, tok, partner


REDUCED_STEPS, REDUCED_BATCH = 1000, 16


def reduced_bootstrap(root: str) -> dict:
    """The bootstrap on the easiest problems (1-2 operations, numbers up to 20, no planted errors or redundant
    thoughts), 1000 steps of 16 at lr 1e-3: its SFT steps, held-out metrics and paths (picklable, for a child under
    another kernel set). Its learning is tests/toy/test_bootstrap.py's; Hawkeye's responder test starts from it."""
    from dataclasses import replace

    from longshort.toy.bootstrap import BootstrapConfig, BootstrapEvalConfig, run_bootstrap
    from longshort.toy.tiny import TokenizerConfig

    cfg = BootstrapConfig(
        task=TaskConfig(seed=0, n_train=REDUCED_STEPS * REDUCED_BATCH, n_eval=100, min_steps=1, max_steps=2,
                        max_value=20, max_operand=6, error_rate=0.0, redundancy=0.0),
        tokenizer=TokenizerConfig(n_texts=2000),
        sft=replace(BootstrapConfig().sft, micro_batch_size=REDUCED_BATCH, lr=1e-3, min_lr=1e-4, progress=False,
                    log_every=100),
        eval=BootstrapEvalConfig(max_new_tokens=128),
    )
    res = run_bootstrap(cfg, Path(root) / "run")
    return {"steps": res.sft.steps, "metrics": res.metrics, "model": str(res.model_dir),
            "train": str(res.train_path), "eval": str(res.eval_path)}



_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || (e.target && e.target.outerHTML))), true);
window.addEventListener('load', () => {
  const box = sel => Array.from(document.querySelectorAll(sel)).map(el => {
    const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; });
  const out = {errors: window.__errors, viewport: window.innerWidth, page_width: document.documentElement.scrollWidth,
    tables: box('table'), results_rows: document.querySelectorAll('table.results tbody tr').length,
    svgs: box('.plot svg'), plot_marks: document.querySelectorAll('.plot svg path, .plot svg use').length,
    dialogues: box('.dialogue'), turns: box('.turn'), kept: box('.turn .kept'),
    roles: Array.from(document.querySelectorAll('.turn')).map(t => t.dataset.role),
    links: Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href')),
    external: Array.from(document.querySelectorAll('[src], link[href]')).length};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def render_page(chromium: str, page: Path, tmp: Path, width: int = 390, height: int = 844) -> dict:
    """Open ``page`` in headless Chromium at a phone's size and report what rendered: the size of each table, plot,
    dialogue and turn, the page's width against the viewport's, links, and every error (script, resource, console).
    A probe script is put into a copy of the page; the page itself has none."""
    import html
    import re
    import subprocess

    probed = tmp / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium rendered no probe (rc {done.returncode}): {done.stderr[-1500:]}"
    report = json.loads(html.unescape(found.group(1)))
    report["console"] = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    return report
