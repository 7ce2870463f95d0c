"""Keep credentials out of logs, saved configs and W&B.

Two complementary rules, because neither alone is safe:
  * by key: a mapping entry whose key names a secret (``api_key``, ``hf_token``, ``password``, ...) is masked;
  * by value: any string has the values of secret environment variables (``WANDB_API_KEY``, ``HF_TOKEN``, ...),
    well-known token formats, ``key=value`` pairs with a secret key, and URL passwords masked.
Tokenizer settings such as ``pad_token`` or ``max_new_tokens`` are *not* secrets: masking them would corrupt a
saved config that is later reloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

MASK = "<redacted>"

# Whole words (after splitting snake/camel/kebab case) that make a key secret.
_SECRET_WORDS = frozenset(
    {"secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials", "apikey", "authorization"}
)
_SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("secret", "key"), ("access", "token")})
# `<x>_token` keys that name a tokenizer marker, not a credential.
_MARKER_TOKENS = frozenset(
    {
        "pad", "eos", "bos", "unk", "sep", "cls", "mask", "end", "stop", "start", "special", "eot", "think",
        "end_turn", "begin", "role", "think_open", "think_close", "im_start", "im_end", "image", "audio", "video",
        "placeholder", "additional_special", "decoder_start", "end_of_turn", "next", "first", "last",
    }
)  # fmt: skip
# A key ending in one of these holds *where* a secret lives (an env var name, a file path), not the secret.
_POINTER_SUFFIXES = frozenset({"env", "var", "file", "path", "dir", "source", "id", "ids", "len", "length"})
_MARKER_VALUE = re.compile(r"^(<[^<>\s]{1,40}>|\[[A-Z_]{1,20}\])$")
_ENV_SECRET_WORDS = frozenset({"TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIALS"})

_KNOWN_FORMATS = [
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),  # GitHub
    re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"),  # OpenAI-style
    re.compile(r"\bxox[abpors]-[A-Za-z0-9-]{10,}"),  # Slack
]
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)[^@/\s]+(?P<at>@)")
# `key=value`, `key: value`, `"key": "value"` and `--key value` inside free text.
_KEY_VALUE = re.compile(
    r"""(?P<head>(?P<q>["']?)(?P<key>[A-Za-z][\w.-]*)(?P=q)\s*[=:]\s*(?P<vq>["']?))(?P<value>[^\s"',;}\]]+)"""
)
_FLAG_VALUE = re.compile(r"(?P<head>(?P<key>--[A-Za-z][\w-]*)\s+)(?P<value>[^\s-]\S*)")


def _words(key: str) -> list[str]:
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    return [w for w in re.split(r"[^a-z0-9]+", snake) if w]


def is_secret_key(key: str) -> bool:
    """True if a config/dict key names a credential (``wandb_api_key``, ``hfToken``, ``password``; not ``pad_token``)."""
    words = _words(key)
    if not words or words[-1] in _POINTER_SUFFIXES:
        return False
    if any(w in _SECRET_WORDS for w in words) or any(p in _SECRET_PAIRS for p in pairwise(words)):
        return True
    return words[-1] == "token" and "_".join(words[:-1]) not in _MARKER_TOKENS


@functools.lru_cache(maxsize=4096)  # env_secrets runs on every log line; names rarely change
def _is_secret_env_name(name: str) -> bool:
    parts = [p for p in re.split(r"[^A-Z0-9]+", name.upper()) if p]
    pairs = set(pairwise(parts))
    return bool(_ENV_SECRET_WORDS.intersection(parts)) or ("API", "KEY") in pairs or ("PRIVATE", "KEY") in pairs


def env_secrets(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables (long enough to be a real secret), longest first."""
    env = os.environ if env is None else env
    vals = {v for k, v in env.items() if _is_secret_env_name(k) and len(v) >= 8 and v.lower() not in {"true", "false"}}
    return sorted(vals, key=len, reverse=True)


def scrub_text(text: str, env: Mapping[str, str] | None = None) -> str:
    """Mask every secret that can be recognised inside free text (log lines, command lines, config strings)."""
    return _scrub_text(text, env_secrets(env))


def _scrub_text(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _KNOWN_FORMATS:
        text = pattern.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['pre']}{MASK}{m['at']}", text)

    def _kv(m: re.Match) -> str:
        if not is_secret_key(m["key"]) or m["value"] == MASK or _MARKER_VALUE.match(m["value"]):
            return m.group(0)
        return f"{m['head']}{MASK}"

    return _FLAG_VALUE.sub(_kv, _KEY_VALUE.sub(_kv, text))


def scrub(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, dataclasses, strings) with credentials masked as ``<redacted>``.

    Secret-named keys have their value masked whole (an empty/None value stays, so "unset" remains visible);
    strings everywhere go through `scrub_text`. The input is never modified.
    """
    return _scrub(obj, env_secrets(env))  # read the environment once per call


def _scrub(obj: Any, secrets: list[str]) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        from longshort.core.config import to_dict  # a config's plain data: what it prints and reloads as

        obj = to_dict(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if is_secret_key(str(k)) and v not in (None, "") and not (isinstance(v, str) and _MARKER_VALUE.match(v)):
                out[k] = MASK
            else:
                out[k] = _scrub(v, secrets)
        return out
    if isinstance(obj, (list, tuple)):
        items = [_scrub(v, secrets) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, str):
        return _scrub_text(obj, secrets)
    return obj
