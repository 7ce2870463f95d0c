"""``longshort rl``: synergizing multi-turn RL of the pair; both policies roll out together and both are updated.

Each step: take ``prompts_per_step`` problems, run ``group_size`` pair episodes per problem through the two
policies' engines (``episodes.rollout``), score them (``rewards``), turn each role's rewards into group-relative
advantages (``advantages``), update each training role on its own tokens (``experience`` + ``rl_update``), and sync
the new weights to that role's engines. ``schedule: both`` updates both policies every step; ``alternate`` trains
one while the other stays frozen (as the official code does), switching every ``alternate_every`` steps.

Other recipes bring their own roles and turn rules through their ``rl`` section class (``RLSettings``); a frozen
role only generates. Outputs under ``<run>/rl/``: ``checkpoints/step-N/`` (every trainable policy + controller
state, atomic), ``eval.json`` (the last held-out evaluation, with the base model's numbers next to it), ``<role>/model``
per trainable role. ``resume=True`` continues from the latest complete checkpoint, reproducing an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from longshort.cluster.actor_calls import ActorFailure
from longshort.cluster.topology import TopologyConfig, topology_config_class
from longshort.core import manifest
from longshort.core import run_dir as rd
from longshort.core.config import PLACEMENT
from longshort.core.errors import LongshortError
from longshort.core.stage import RoleSpec
from longshort.data.problems import ProblemSource, load_problems
from longshort.data.protocol import PAIR_ROLES, PAIR_RULES, TurnRules
from longshort.rl import checkpoint as ckpt
from longshort.rl.advantages import Estimator, compute_advantages
from longshort.rl.episodes import EpisodeConfig, PromptItem, rollout
from longshort.rl.experience import Aggregation, make_minibatches, role_sequences
from longshort.rl.group_filter import GroupFilterConfig, select_groups
from longshort.rl.metrics import base_metrics, episode_metrics, evaluate, sample_columns, sample_rows
from longshort.rl.policy_loss import KLEstimator, LossSpec
from longshort.rl.rewards import RewardTerm, check_terms, compute_rewards
from longshort.rl.update import RLOptimConfig, UpdateSpec, train_role
from longshort.training.lora import LoraSettings

log = logging.getLogger("longshort")
Hook = Callable[[str, int, object], None]  # (event, step, Policies): "start", "after_generate", "after_train"


def _default_rewards() -> list[RewardTerm]:
    return [RewardTerm("correctness", 1.0), RewardTerm("format", 0.2),
            RewardTerm("length", 0.2, {"kind": "kimi"}), RewardTerm("collaboration", 0.1)]


@dataclass
class RLSettings:
    """What every recipe's ``rl`` section has. A recipe subclasses it with its ``ROLES`` (trainable or frozen),
    ``RULES`` (who speaks when), one ``<role>_model`` key per role and ``model_default``; frozen roles only
    generate, and are never trained, checkpointed or exported. ``RLConfig`` is the Long⊗Short pair's."""

    ROLES: ClassVar[dict[str, RoleSpec]] = {r: RoleSpec() for r in PAIR_ROLES}
    RULES: ClassVar[TurnRules] = PAIR_RULES

    steps: int = field(default=40, metadata={"ge": 1})
    prompts_per_step: int = field(default=8, metadata={"ge": 1})
    group_size: int = field(default=8, metadata={"ge": 2})  # episodes per problem (the advantage group)
    episode: EpisodeConfig = field(default_factory=EpisodeConfig)  # turns, token limits, temperature
    advantage: Estimator = "grpo"
    clip_low: float = field(default=0.2, metadata={"ge": 0, "lt": 1})
    clip_high: float = field(default=0.28, metadata={"ge": 0})
    dual_clip: float | None = field(default=None, metadata={"gt": 1})
    kl_coef: float = field(default=0.0, metadata={"ge": 0})
    kl_estimator: KLEstimator = "k3"
    loss_agg: Aggregation = "token-mean"
    logprobs: Literal["rollout", "recompute"] = "rollout"  # importance-ratio denominator
    schedule: Literal["both", "alternate"] = "both"
    alternate_every: int = field(default=1, metadata={"ge": 1})  # steps per phase with schedule: alternate
    mini_batches: int = field(default=1, metadata={"ge": 1})  # optimizer steps per role per RL step
    filter_groups: GroupFilterConfig = field(default_factory=GroupFilterConfig)  # dynamic sampling (group_filter.py)
    rewards: list[RewardTerm] = field(default_factory=_default_rewards)
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    lora: dict[str, LoraSettings] = field(default_factory=dict)  # trainable role -> its LoRA adapter (peft)
    train: ProblemSource = field(default_factory=ProblemSource)  # path "": <run>/bootstrap/data/train.jsonl
    eval: ProblemSource = field(default_factory=ProblemSource)  # progress on dev; path "": <run>/bootstrap/data/dev.jsonl
    eval_every: int = field(default=10, metadata={"ge": 0})  # 0: only before and after training
    eval_before: bool = True  # evaluate the starting pair (step 0)
    eval_at_end: bool = True  # evaluate after the last step
    save_every: int = field(default=10, metadata={"ge": 0})  # 0: only at the end
    keep_checkpoints: int = field(default=2, metadata={"ge": 1})
    samples_logged: int = field(default=4, metadata={"ge": 0})  # episodes per step in the rl/samples table
    samples_every: int = field(default=5, metadata={"ge": 1})
    export: bool = True
    progress: bool = field(default=True, metadata={PLACEMENT: True})
    seed: int = 0

    def validate(self) -> None:
        if self.episode.temperature <= 0:
            raise ValueError("episode: temperature 0 (greedy) gives every sample of a group the same episode; "
                             "accepted: episode.temperature > 0")
        if self.optim.lr < self.optim.min_lr:
            raise ValueError("optim: lr below min_lr; accepted: min_lr <= lr")
        if self.kl_coef > 0 and self.kl_estimator == "none":
            raise ValueError(f"kl_coef: {self.kl_coef} with kl_estimator none; accepted: kl_estimator k1 or k3, "
                             "or kl_coef 0")
        if unknown := sorted(set(self.lora) - set(self.trainable_roles)):
            raise ValueError(f"lora: {', '.join(unknown)} is not a trainable role; accepted: "
                             f"{', '.join(self.trainable_roles)}")
        if not self.rewards:
            raise ValueError("rewards: empty; accepted: at least one term, e.g. [{name: correctness}]")
        try:
            check_terms(self.rewards, list(self.ROLES), self.trainable_roles)
        except LongshortError as e:
            raise ValueError(f"rewards: {e}") from None

    @property
    def trainable_roles(self) -> tuple[str, ...]:
        return tuple(r for r, spec in self.ROLES.items() if spec.trainable)

    def model_dir(self, run_dir: Path, role: str) -> Path:
        """``rl.<role>_model`` when set, else the run's own (the pair's: ``sft/<role>/model``)."""
        return rd.resolve(run_dir, getattr(self, f"{role}_model", None), self.model_default(role))

    def model_default(self, role: str) -> str:
        return rd.role_model("sft", role)

    def loss_spec(self) -> LossSpec:
        return LossSpec(self.clip_low, self.clip_high, self.dual_clip, self.kl_coef, self.kl_estimator,
                        self.episode.temperature)

    def training_roles(self, step: int) -> tuple[str, ...]:
        """The roles updated at ``step``: every trainable one (``both``), or one at a time (``alternate``)."""
        trainable = self.trainable_roles
        if self.schedule == "both":
            return trainable
        return (trainable[((step - 1) // self.alternate_every) % len(trainable)],)


@dataclass
class RLConfig(RLSettings):
    """Multi-turn RL of the pair (config section ``rl``); defaults suit the tiny embedded run on a laptop."""

    long_model: str | None = None  # None: <run>/sft/long/model
    short_model: str | None = None  # None: <run>/sft/short/model


@dataclass
class RLResult:
    steps: int
    checkpoint: Path | None
    eval: dict | None
    models: dict[str, Path]
    resumed_from: int


class RLInterrupted(LongshortError):
    """An actor failed mid-run: every actor was stopped; ``checkpoint`` is where ``--resume`` continues."""

    def __init__(self, message: str, failure: ActorFailure | None = None, checkpoint: Path | None = None,
                 step: int = 0):
        super().__init__(message)
        self.failure, self.checkpoint, self.step = failure, checkpoint, step


def _check(cfg: RLSettings) -> None:
    """The checks ``config.build`` runs, for configs built in Python."""
    for i, section in enumerate([*cfg.rewards, cfg]):
        try:
            section.validate()
        except ValueError as e:
            key = f"rl.rewards[{i}]" if i < len(cfg.rewards) else "rl"
            raise LongshortError(f"{key}: {e}") from None


def _prompts(src: ProblemSource, run_dir: Path, default: str) -> list[PromptItem]:
    problems, report = load_problems(replace(src, path=str(rd.resolve(run_dir, src.path or None, default))))
    if report.n_skipped:
        log.warning("rl: %s", report.summary())
    return [PromptItem(p.id, p.problem, p.gold, {k: v for k, v in (("solution", p.solution), ("long_cot", p.long_cot))
                                                 if v}) for p in problems]


def _model_dir(cfg: RLSettings, run_dir: Path, role: str) -> Path:
    path = cfg.model_dir(run_dir, role)
    if not (path / "config.json").exists():
        stage = Path(cfg.model_default(role)).parts[0]
        raise LongshortError(f"rl: the {role} model {path} does not exist; run `longshort {stage}` first or set "
                             f"rl.{role}_model to a Hugging Face model directory")
    return path


def _context_limit(model_dirs: dict[str, Path]) -> int | None:
    from transformers import AutoConfig

    limits = [getattr(AutoConfig.from_pretrained(str(p)).get_text_config(), "max_position_embeddings", None)
              for p in model_dirs.values()]
    known = [x for x in limits if x]
    return min(known) if known else None


def run_rl(cfg: RLSettings, run_dir: str | Path, topology: TopologyConfig | None = None, tracker=None, verifier=None,
           resume: bool = False, hook: Hook | None = None) -> RLResult:
    """Train the recipe's trainable roles ``cfg.steps`` steps (see the module docstring); ``hook`` is called at
    step events."""
    from transformers import AutoTokenizer

    from longshort.cluster.policy_group import Policies
    from longshort.data.tokenizers import check_shared_tokenizer
    from longshort.data.verify import shared_verifier

    _check(cfg)
    run_dir = Path(run_dir)
    roles, trainable = tuple(cfg.ROLES), cfg.trainable_roles
    topology = topology or topology_config_class(cfg.ROLES)()
    if not cfg.loss_spec().uses_kl:  # no KL term: the frozen references would only take memory
        topology = replace(topology, **{r: replace(topology.role(r), reference=False) for r in topology.role_names})
    out = run_dir / rd.RL
    models = {r: _model_dir(cfg, run_dir, r) for r in roles}
    check_shared_tokenizer(models, "rl")
    tok = AutoTokenizer.from_pretrained(str(models[trainable[0]]))
    stream = ckpt.ProblemStream(_prompts(cfg.train, run_dir, rd.TRAIN_DATA), cfg.seed)
    eval_prompts = _prompts(cfg.eval, run_dir, rd.DEV_DATA)  # progress is read on dev; test is the eval stage's
    verifier = verifier or shared_verifier()
    limit, base = _context_limit(models), base_metrics(run_dir, [p.problem_id for p in eval_prompts])
    eval_cfg = replace(cfg.episode, temperature=0.0)
    root = run_dir / rd.RL_CHECKPOINTS
    found = ckpt.checkpoints(root)
    if found and not resume:
        raise LongshortError(f"rl: {root} already holds checkpoints (latest {found[-1].name}); continue with "
                             "`longshort rl CONFIG --resume`, or delete that directory to start over")
    latest, skipped = manifest.newest_intact(found) if resume else (None, [])
    if skipped:
        log.warning("rl: skipping damaged checkpoint(s) %s", "; ".join(skipped))
    total_opt = cfg.steps * cfg.mini_batches
    trainer_cfgs = {r: replace(cfg.optim.trainer_config(total_opt), lora=cfg.lora.get(r)) for r in trainable}
    spec = UpdateSpec(cfg.loss_spec(), recompute_old=cfg.logprobs == "recompute")
    state = ckpt.ControllerState(seed=cfg.seed)
    rng = random.Random(f"longshort-rl-samples/{cfg.seed}")
    last_ckpt, last_eval = latest if resume else None, None

    def log_metrics(metrics: dict, step: int) -> None:
        if tracker is not None:
            tracker.log(metrics, step=step)

    def run_eval(pol, step: int) -> dict:
        res = evaluate({r: pol[r].generate for r in roles}, tok, eval_prompts, eval_cfg, verifier,
                       seed=cfg.seed, context_limit=limit, base=base, rules=cfg.RULES)
        per_role = ", ".join(f"{r} {res[f'tokens_{r}']:.1f}" for r in roles)
        log.info("rl eval @%d: accuracy %.3f, tokens %.1f (%s)%s", step, res["accuracy"], res["tokens"], per_role,
                 f", base {res['base_accuracy']:.3f} / {res['base_tokens']:.1f} tokens" if "base_tokens" in res else "")
        log_metrics({f"eval/{k}": v for k, v in res.items()}, step)
        state.evals.append({"step": step, **res})
        return res

    bar = _Bar(cfg.progress, cfg.steps, roles)
    with Policies.start(topology, {r: str(p) for r, p in models.items()}, trainer_cfgs, cfg.seed) as pol:
        try:
            if resume and latest is not None:
                state = ckpt.load(pol, latest, trainable)
                stream.cursor, rng = state.cursor, ckpt.rng_from_json(state.rng)
                log.info("rl: resumed from %s (step %d, %d prompts consumed)", latest, state.step, state.cursor)
            elif resume:
                log.info("rl: nothing to resume in %s; starting from step 0", root)
            resumed_from = state.step
            bar.start(state.step)
            if hook:
                hook("start", state.step, pol)
            if state.step == 0 and cfg.eval_before and eval_prompts:
                last_eval = run_eval(pol, 0)
            for step in range(state.step + 1, cfg.steps + 1):
                metrics = _step(cfg, pol, tok, stream, step, verifier, limit, spec, tracker, rng, hook)
                state.step, state.cursor, state.rng = step, stream.cursor, ckpt.rng_to_json(rng)
                log_metrics(metrics, step)
                bar.update(step, metrics)
                at_end = step == cfg.steps and cfg.eval_at_end
                if eval_prompts and (at_end or (cfg.eval_every and step % cfg.eval_every == 0)):
                    last_eval = run_eval(pol, step)
                if step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
                    last_ckpt = ckpt.save(pol, root, state, trainable, cfg.keep_checkpoints)
            exported = {}
            if cfg.export:
                for r in trainable:  # a frozen role's model is its input, unchanged
                    exported[r] = Path(pol[r].export(out / r / "model"))
        except ActorFailure as e:
            bar.stop()
            where = f"it can resume from {last_ckpt}" if last_ckpt else "no checkpoint yet: it starts again"
            on = f" on node {e.node}" if e.node else ""  # a lost node shows as its actors dying
            raise RLInterrupted(f"rl stopped at step {state.step + 1}: {e.role} actor {e.actor} {e.kind} during "
                                f"{e.during}{on}; all actors were stopped; {where}", e, last_ckpt, state.step + 1) from e
        finally:
            bar.stop()
    if last_eval is None and state.evals:
        last_eval = state.evals[-1]
    if last_eval is not None:
        out.mkdir(parents=True, exist_ok=True)
        (run_dir / rd.RL_EVAL).write_text(json.dumps({**last_eval, "history": state.evals}, indent=2))
    return RLResult(state.step, last_ckpt, last_eval, exported, resumed_from)


def _step(cfg: RLSettings, pol, tok, stream, step: int, verifier, limit, spec: UpdateSpec, tracker, rng,
          hook: Hook | None) -> dict:
    """One RL step: rollout, rewards, per-role advantages and update, weight sync. Returns the step's metrics."""
    t_step = time.perf_counter()
    prompts = stream.take(cfg.filter_groups.problems_per_step(cfg.prompts_per_step))
    roles = tuple(cfg.ROLES)
    episodes, rstats = rollout(prompts, {r: pol[r].generate for r in roles}, tok, cfg.episode,
                               group_size=cfg.group_size, seed=cfg.seed, step=step, context_limit=limit, rules=cfg.RULES)
    t_gen = time.perf_counter() - t_step
    if hook:
        hook("after_generate", step, pol)
    t0 = time.perf_counter()
    rewards = compute_rewards(episodes, cfg.rewards, verifier, tok, roles)
    t_reward = time.perf_counter() - t0
    trained, trained_rewards, m = (select_groups(episodes, rewards, cfg.prompts_per_step, cfg.filter_groups.metric)
                                   if cfg.filter_groups.enable else (episodes, rewards, {}))
    groups = [e.group for e in trained]
    advantages = {r: compute_advantages(trained_rewards.total[r], groups, cfg.advantage) for r in cfg.trainable_roles}
    m.update(episode_metrics(episodes, rewards, advantages, roles))  # episodes: every rollout; advantages: trained
    n_ranks = {r: len(pol[r].ranks) for r in cfg.trainable_roles}
    max_tokens = int(cfg.optim.micro_batch_logits_mb * 2**20 // (4 * len(tok))) or None  # fp32 logits per token
    train_tokens = 0.0
    for role in cfg.training_roles(step):
        seqs = role_sequences(trained, role, advantages[role])
        need = cfg.mini_batches * n_ranks[role] * cfg.optim.grad_accum
        if len(seqs) < need:
            kept = f" (dynamic sampling kept {len(set(groups))} groups)" if cfg.filter_groups.enable else ""
            log.warning("rl step %d: %s wrote tokens in %d episodes%s, fewer than the %d micro-batches of an update; "
                        "its update is skipped this step", step, role, len(seqs), kept, need)
            m[f"{role}/update_skipped"] = 1.0
            continue
        minis = make_minibatches(seqs, mini_batches=cfg.mini_batches, ranks=n_ranks[role], agg=cfg.loss_agg,
                                 pad_id=tok.pad_token_id, grad_accum=cfg.optim.grad_accum, max_tokens=max_tokens)
        stats = train_role(pol[role], minis, spec)
        sync = pol[role].sync_weights()
        train_tokens += stats["train_tokens"]
        m.update({f"{role}/{k}": v for k, v in stats.items() if k not in ("seconds", "prep_seconds")})
        m[f"{role}/update_skipped"] = 0.0
        m[f"time/train_{role}"] = stats["seconds"]
        m[f"time/logprobs_{role}"] = stats["prep_seconds"]
        m[f"time/sync_{role}"] = sync.seconds
    if hook:
        hook("after_train", step, pol)
    if tracker is not None and cfg.samples_logged and step % cfg.samples_every == 0:
        tracker.log_table("rl/samples", sample_columns(roles),
                          sample_rows(episodes, rewards, tok, cfg.samples_logged, rng, roles), step=step)
    elapsed = time.perf_counter() - t_step
    generated = sum(rstats.generated.values())
    m.update({f"time/generate_{r}": rstats.seconds[r] for r in roles})
    m.update({"time/generate": t_gen, "time/reward": t_reward, "time/step": elapsed,
              "throughput/generated_tokens_per_s": generated / max(t_gen, 1e-9),
              "throughput/train_tokens_per_s": train_tokens / max(elapsed - t_gen - t_reward, 1e-9),
              "data/epoch": stream.epoch})
    return m


class _Bar:
    """A progress row over RL steps (off with ``progress: false``; drawn only at a terminal)."""

    def __init__(self, show: bool, total: int, roles: tuple[str, ...]):
        self.show, self.total, self.roles, self.bar, self.task = show, total, roles, None, None

    def start(self, done: int) -> None:
        if not self.show:
            return
        from contextlib import ExitStack

        from longshort.core.progress import bar

        self.bar = ExitStack()
        self.task = self.bar.enter_context(bar("rl", self.total, completed=done))

    def update(self, step: int, m: dict) -> None:
        rewards = " ".join(f"{r} {m[f'{r}/reward']:.3f}" for r in self.roles)
        tokens = " ".join(f"{r} {m[f'{r}/tokens']:.1f}" for r in self.roles)
        log.info("rl step %d/%d: accuracy %.3f reward %s tokens %s (%.1f s)", step, self.total,
                 m["episode/accuracy"], rewards, tokens, m["time/step"])
        if self.task is not None:
            self.task.update(completed=step, description=f"acc {m['episode/accuracy']:.2f}")

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = self.task = None
