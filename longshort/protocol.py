"""The collaboration protocol: turn markers and how a dialogue becomes token ids with role spans.

Every stage (SFT, rollout, RL, inference) renders dialogues through this one module, so the token
layout a model is trained on is exactly the layout it is later prompted with.

Layout of a dialogue (each marker is a single special token)::

    <|user|>problem<|end_turn|><|long|>thought<|end_turn|><|short|>steps<|end_turn|>...<|short|>answer<|endoftext|>

A turn ends with ``<|end_turn|>`` (hand control to the other role) or ``<|endoftext|>`` (the dialogue is
finished). A single-model chat uses the ``assistant`` role the same way. Role headers are written by
the controller, never by a model; a turn's trainable span is its content plus its terminator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longshort.errors import LongshortError

PAD = "<|pad|>"
EOS = "<|endoftext|>"
END_TURN = "<|end_turn|>"
ROLES = ("system", "user", "assistant", "long", "short")
ROLE_TOKENS = {role: f"<|{role}|>" for role in ROLES}
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = [PAD, EOS, END_TURN, *ROLE_TOKENS.values()]
# Plain added tokens: they appear in decoded text, unlike the special markers above.
ADDED_TOKENS = [THINK_OPEN, THINK_CLOSE]

# Jinja template equivalent to `render` (for tools that call `apply_chat_template`).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if loop.last and m['role'] not in ['user', 'system'] and not add_generation_prompt %}<|endoftext|>"
    "{% else %}<|end_turn|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Span:
    """Tokens ``[start, end)`` written by ``role`` (content plus terminator, header excluded)."""

    role: str
    start: int
    end: int


@dataclass
class Rendered:
    ids: list[int]
    spans: list[Span] = field(default_factory=list)

    def loss_mask(self, roles: set[str] | frozenset[str]) -> list[int]:
        """1 on the tokens written by any of ``roles``, else 0."""
        mask = [0] * len(self.ids)
        for span in self.spans:
            if span.role in roles:
                mask[span.start : span.end] = [1] * (span.end - span.start)
        return mask


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of the protocol's markers; a clear error if the tokenizer lacks one."""
    ids = {}
    for tok in [*SPECIAL_TOKENS, *ADDED_TOKENS]:
        tid = tokenizer.convert_tokens_to_ids(tok)
        if tid is None or tid == tokenizer.unk_token_id:
            raise LongshortError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no token {tok!r}; "
                "add the protocol tokens with longshort.protocol.add_protocol_tokens(tokenizer, model)"
            )
        ids[tok] = tid
    return ids


def add_protocol_tokens(tokenizer, model=None) -> int:
    """Add the protocol's tokens to any tokenizer (and resize ``model``); returns how many were new."""
    vocab = tokenizer.get_vocab()
    # add_tokens(special_tokens=True) has the same meaning in transformers 4 and 5, unlike add_special_tokens' kwargs.
    n = tokenizer.add_tokens([t for t in SPECIAL_TOKENS if t not in vocab], special_tokens=True)
    n += tokenizer.add_tokens([t for t in ADDED_TOKENS if t not in vocab])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD
    tokenizer.chat_template = CHAT_TEMPLATE
    if model is not None and n:
        model.resize_token_embeddings(len(tokenizer))
    return n


def header_ids(tokenizer, role: str) -> list[int]:
    if role not in ROLE_TOKENS:
        raise LongshortError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return [tokenizer.convert_tokens_to_ids(ROLE_TOKENS[role])]


def render(messages: list[Message], tokenizer, finished: bool = True) -> Rendered:
    """Token ids of a dialogue and the span each role wrote.

    Each message's content is tokenized on its own and joined with marker ids, so spans are exact
    (no offsets recovered from re-tokenized text). With ``finished`` the last non-user turn ends
    with EOS, else with END_TURN.
    """
    end_turn = tokenizer.convert_tokens_to_ids(END_TURN)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    spans: list[Span] = []
    for i, msg in enumerate(messages):
        if not msg.content.strip():
            raise LongshortError(f"message {i} (role {msg.role!r}) is empty; every turn needs text")
        ids += header_ids(tokenizer, msg.role)
        start = len(ids)
        ids += tokenizer.encode(msg.content, add_special_tokens=False)
        last = i == len(messages) - 1
        ids.append(eos if (finished and last and msg.role not in ("user", "system")) else end_turn)
        spans.append(Span(msg.role, start, len(ids)))
    return Rendered(ids, spans)


def prompt_ids(messages: list[Message], tokenizer, next_role: str) -> list[int]:
    """Ids that prompt ``next_role`` to write its turn after ``messages``."""
    return render(messages, tokenizer, finished=False).ids + header_ids(tokenizer, next_role)
