"""The W&B backend of `longshort.tracking.tracker`, and how its mode is chosen.

Auto mode goes online only when credentials exist, so a laptop without an account still gets a complete offline
run (``wandb sync <dir>`` uploads it later). The run id is kept in ``<run_dir>/wandb_run_id.txt`` and passed with
``resume="allow"``, so restarting a run from its directory continues the same W&B run.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from longshort.core.errors import LongshortError, where
from longshort.core.logs import get_logger
from longshort.tracking.base import Backend, TrackingConfig

log = get_logger(__name__)
RUN_ID_FILE = "wandb_run_id.txt"
# Hosts whose netrc entries W&B accepts when WANDB_BASE_URL is unset (wandb 0.31 defaults to the forge host and falls
# back to the api.wandb.ai entry that older `wandb login` wrote).
SAAS_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
_LOGIN_HINT = "run `wandb login` or set WANDB_API_KEY"


def _netrc_path(env: Mapping[str, str]) -> Path | None:
    if env.get("NETRC"):
        return Path(env["NETRC"]).expanduser()
    for name in ("~/.netrc", "~/_netrc"):
        if (path := Path(name).expanduser()).exists():
            return path
    return None


def _netrc_has_password(path: Path, host: str) -> bool:
    """A tolerant netrc scan (the stdlib parser rejects files that wandb itself accepts)."""
    try:
        tokens = path.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    machine = None
    for key, value in zip(tokens, tokens[1:], strict=False):
        if key in ("machine", "default"):
            machine = value if key == "machine" else "*"
        elif key == "password" and machine in (host, "*") and value:
            return True
    return False


def wandb_credentials(env: Mapping[str, str] | None = None) -> str | None:
    """Where W&B credentials come from (a description without the secret), or None if there are none."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    if env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "WANDB_IDENTITY_TOKEN_FILE"
    if base := env.get("WANDB_BASE_URL"):
        url = urlparse(base if "://" in base else f"https://{base}")
        hosts = tuple(dict.fromkeys(h for h in (url.netloc, url.hostname) if h))
    else:
        hosts = SAAS_HOSTS
    path = _netrc_path(env)
    for host in hosts if path is not None else ():
        if _netrc_has_password(path, host):
            return f"netrc entry for {host} in {path}"
    return None


def resolve_mode(mode: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(W&B mode, reason) for a config ``mode``; 'online' without credentials is an error, not a silent fallback."""
    env = os.environ if env is None else env
    reason = f"tracking.mode={mode}"
    if mode == "auto" and env.get("WANDB_MODE"):
        raw = env["WANDB_MODE"].strip().lower()
        if raw not in _ENV_MODES:
            raise LongshortError(
                f"{where(key='WANDB_MODE')} (environment): {raw!r} is not a W&B mode; accepted: "
                f"{', '.join(_ENV_MODES)}; or unset it and choose tracking.mode in the config"
            )
        mode, reason = _ENV_MODES[raw], f"WANDB_MODE={raw}"
    creds = wandb_credentials(env)
    if mode == "auto":
        return (
            ("online", f"credentials from {creds}")
            if creds
            else ("offline", f"no W&B credentials; {_LOGIN_HINT} to go online")
        )
    if mode == "online" and not creds:
        raise LongshortError(
            f"{where(key='tracking.mode')}: {reason} but no W&B credentials were found (WANDB_API_KEY, "
            f"WANDB_IDENTITY_TOKEN_FILE, or a netrc entry for the W&B host); {_LOGIN_HINT}, or set tracking.mode "
            "to 'auto' or 'offline'"
        )
    return mode, reason


def read_run_id(run_dir: Path) -> str | None:
    path = run_dir / RUN_ID_FILE
    if not path.exists():
        return None
    run_id = path.read_text(encoding="utf-8").strip()
    if not _RUN_ID.match(run_id):
        raise LongshortError(
            f"{where(str(path), 1)}: {run_id[:80]!r} is not a W&B run id (letters, digits, '_', '-'); "
            "delete the file to start a new W&B run for this directory"
        )
    return run_id


def _new_run_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbBackend(Backend):
    def __init__(self, cfg: TrackingConfig, run_dir: Path, config: dict[str, Any], mode: str, reason: str):
        import wandb

        self.cfg, self.wandb = cfg, wandb
        resumed = read_run_id(run_dir)
        self.run_id = resumed or _new_run_id()
        (run_dir / RUN_ID_FILE).write_text(self.run_id + "\n", encoding="utf-8")  # before init: a crash still resumes
        wandb_dir = Path(cfg.wandb_dir or os.environ.get("WANDB_DIR") or run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=cfg.project, entity=cfg.entity, group=cfg.group, name=cfg.name or run_dir.resolve().name,
            tags=list(cfg.tags), notes=cfg.notes, config=config, id=self.run_id, resume="allow", dir=str(wandb_dir),
            settings=wandb.Settings(init_timeout=cfg.wandb_init_timeout_s),
        )  # fmt: skip
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as e:
            if mode != "online":
                raise
            if cfg.mode != "auto":
                raise LongshortError(
                    f"{where(key='tracking.mode')}: W&B online init failed ({type(e).__name__}: {e}); check the "
                    "network and credentials, or set tracking.mode to 'auto' (falls back to offline) or 'offline'"
                ) from e
            # Auto mode must not cost a run because the W&B server is unreachable: keep everything locally.
            log.warning("W&B online init failed (%s: %s); continuing offline", type(e).__name__, e)
            mode, reason = "offline", "online init failed"
            wandb.teardown()  # the W&B service still holds the failed run's id
            self.run = wandb.init(mode=mode, **kwargs)
        self.mode = mode
        self.last_step = -1
        self.dropped = 0
        verb = "resuming" if resumed else "new"
        log.info("W&B %s (%s): %s run %s in %s", mode, reason, verb, self.run_id, wandb_dir)
        if mode == "offline":
            log.info("upload later with: wandb sync %s", Path(self.run.dir).parent)

    def _step_ok(self, step: int) -> bool:
        # W&B ignores a step lower than one already logged; say so instead of losing data silently.
        if step < self.last_step:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "W&B: step %d < last step %d is ignored by W&B (metrics.jsonl keeps it); log stages on one "
                    "increasing step counter", step, self.last_step,
                )  # fmt: skip
            return False
        self.last_step = step
        return True

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self._step_ok(step):
            self.run.log(metrics, step=step)

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        if self._step_ok(step):
            self.run.log({name: self.wandb.Table(columns=columns, data=rows)}, step=step)

    def log_artifact(self, path: Path, name: str, type: str) -> None:
        if self.cfg.artifacts == "off":
            return
        artifact = self.wandb.Artifact(name, type=type)
        if self.cfg.artifacts == "reference":
            artifact.add_reference(path.as_uri(), name=None if path.is_dir() else path.name)
        elif path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def summary(self, values: dict[str, Any]) -> None:
        self.run.summary.update(values)

    def finish(self, exit_code: int) -> None:
        if self.dropped:
            log.warning("W&B ignored %d log calls whose step went backwards (all are in metrics.jsonl)", self.dropped)
        self.run.finish(exit_code=exit_code)


def make_wandb_backend(cfg: TrackingConfig, run_dir: Path, config: dict[str, Any]) -> WandbBackend | None:
    mode, reason = resolve_mode(cfg.mode)
    if mode == "disabled":
        log.info("W&B disabled (%s)", reason)
        return None
    return WandbBackend(cfg, run_dir, config, mode, reason)
