"""The two prompts of a SoftCoT system, as token ids with N placeholders.

Both come from each model's own chat template (the protocol's template for the embedded models), with the text of
``PromptConfig``. The placeholders are inserted as ids between separately encoded pieces, never by encoding a marker
string, so a placeholder can only be where this module put it. With N = 0 the LLM's prompt is exactly its plain
prompt (the "LLM alone" baseline): no markers, no placeholders.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from longshort.core.errors import LongshortError

_CUT = "\x00THOUGHTS\x00"  # where the placeholders go; a text never contains it


@dataclass
class PromptConfig:
    """Texts of the two prompts. ``{problem}`` is the problem, ``{n}`` the number of thoughts, ``{thoughts}`` (LLM
    prompt only, once) the N placeholders between ``thought_open`` and ``thought_close``."""

    assistant: str = "{problem}"  # the assistant's user turn
    assistant_prefix: str = ""  # the start of its own turn, just before the placeholders
    llm: str = "{problem}{thoughts}"  # the LLM's user turn
    thought_open: str = ""  # marker token(s) before the LLM's placeholders (the paper: <|box_start|> for Qwen)
    thought_close: str = ""
    assistant_slot: str = "<|pad|>"  # the placeholder token of each model (the paper: <|endoftext|> for Qwen)
    llm_slot: str = "<|pad|>"

    def validate(self) -> None:
        allowed = {"assistant": {"problem", "n"}, "assistant_prefix": {"n"}, "llm": {"problem", "n", "thoughts"}}
        for key, names in allowed.items():
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(getattr(self, key)) if f is not None}
            except ValueError as e:
                raise ValueError(f"{key}: {getattr(self, key)!r} is not a valid template ({e}); write literal "
                                 "braces as {{ and }}") from None
            if used - names:
                raise ValueError(f"{key}: {getattr(self, key)!r} uses {sorted(used - names)}; accepted: "
                                 f"{', '.join('{' + n + '}' for n in sorted(names))}, literal braces as {{{{ }}}}")
        if self.llm.count("{thoughts}") != 1:
            raise ValueError(f"llm: {self.llm!r} needs '{{thoughts}}' exactly once; accepted: e.g. "
                             "'{problem}\\nHints: {thoughts}'")
        for key in ("assistant", "llm"):
            if "{problem}" not in getattr(self, key):
                raise ValueError(f"{key}: {getattr(self, key)!r} lacks '{{problem}}'")


def _chat(tokenizer, user: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise LongshortError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no chat template; "
                             "softcot builds both prompts with the models' chat templates")
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def assistant_prompt(tokenizer, cfg: PromptConfig, problem: str, n: int, slot_id: int) -> list[int]:
    """The assistant's chat prompt, its turn opened with ``assistant_prefix`` and N placeholders."""
    text = _chat(tokenizer, cfg.assistant.format(problem=problem, n=n)) + cfg.assistant_prefix.format(n=n)
    return _encode(tokenizer, text) + [slot_id] * n


def llm_prompt(tokenizer, cfg: PromptConfig, problem: str, n: int, slot_id: int) -> list[int]:
    """The LLM's chat prompt with the N placeholders where ``{thoughts}`` is (N = 0: the plain prompt)."""
    if n == 0:
        return _encode(tokenizer, _chat(tokenizer, cfg.llm.format(problem=problem, n=0, thoughts="")))
    head, tail = _chat(tokenizer, cfg.llm.format(problem=problem, n=n, thoughts=_CUT)).split(_CUT)
    thoughts = _encode(tokenizer, cfg.thought_open) + [slot_id] * n + _encode(tokenizer, cfg.thought_close)
    return _encode(tokenizer, head) + thoughts + _encode(tokenizer, tail)
