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

from longshort.core.errors import LongshortError

PAD = "<|pad|>"
EOS = "<|endoftext|>"
END_TURN = "<|end_turn|>"
CHAT_ROLES = ("system", "user", "assistant", "long", "short")  # each has a header token
ROLE_TOKENS = {role: f"<|{role}|>" for role in CHAT_ROLES}
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
        # A known token may be the unk token itself (SmolLM2's unk is <|endoftext|>, the protocol's EOS).
        if tid is None or (tid == tokenizer.unk_token_id and tok != tokenizer.unk_token):
            raise LongshortError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has no token {tok!r}; "
                "add the protocol tokens with longshort.data.protocol.add_protocol_tokens(tokenizer, model)"
            )
        ids[tok] = tid
    return ids


def add_protocol_tokens(tokenizer, model=None, mean_resizing: bool = True) -> int:
    """Add the protocol's tokens to any tokenizer (and resize ``model``; ``mean_resizing=False`` when the caller
    sets the new rows itself); returns how many were new."""
    vocab = tokenizer.get_vocab()
    # add_tokens(special_tokens=True) has the same meaning in transformers 4 and 5, unlike add_special_tokens' kwargs.
    n = tokenizer.add_tokens([t for t in SPECIAL_TOKENS if t not in vocab], special_tokens=True)
    n += tokenizer.add_tokens([t for t in ADDED_TOKENS if t not in vocab])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD
    tokenizer.chat_template = CHAT_TEMPLATE
    if model is not None and n:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=mean_resizing)
    return n


def header_ids(tokenizer, role: str) -> list[int]:
    if role not in ROLE_TOKENS:
        raise LongshortError(f"unknown role {role!r}; roles are {', '.join(CHAT_ROLES)}")
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


# ---- turn rules: who speaks when, how a dialogue ends ---------------------------------------------------
@dataclass(frozen=True)
class TurnRules:
    """Who writes model turn ``k`` and how a generated turn ends, for one recipe's dialogues.

    Roles take turns in ``order`` (cycled). A turn ends with END_TURN (hand control on) or EOS. EOS from a role in
    ``finishers`` ends the dialogue (``finish``); from any other role it is read as END_TURN (``handoff``) and
    ``canonical`` rewrites it, so training sees the layout ``render`` writes. A turn with neither terminator was cut
    by its token limit (``cut``).
    """

    order: tuple[str, ...]
    finishers: frozenset[str]
    max_turns: int  # model turns in one dialogue, all roles together
    # (role, chat role) pairs: a recipe role whose turns open with another role's header token (e.g. Hawkeye's
    # planner writes under ``<|assistant|>``, the header its base model was trained with); others use their own.
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, role: str) -> str:
        """The chat role whose header token opens ``role``'s turns."""
        return dict(self.headers).get(role, role)

    def role(self, turn: int) -> str:
        """Role of model turn ``turn`` (0-based, the user turn not counted)."""
        return self.order[turn % len(self.order)]

    def turn_end(self, role: str, token_ids: list[int], tokenizer) -> str:
        """``finish``, ``handoff`` or ``cut`` (see the class docstring)."""
        if not token_ids:
            return "cut"
        last = token_ids[-1]
        if last == tokenizer.convert_tokens_to_ids(EOS):
            return "finish" if role in self.finishers else "handoff"
        if last == tokenizer.convert_tokens_to_ids(END_TURN):
            return "handoff"
        return "cut"

    def canonical(self, role: str, token_ids: list[int], tokenizer) -> list[int]:
        """A generated turn as ``render`` would lay it out: a non-finisher's EOS becomes END_TURN."""
        eos, end_turn = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(END_TURN)
        if role not in self.finishers and token_ids and token_ids[-1] == eos:
            return [*token_ids[:-1], end_turn]
        return list(token_ids)


# ---- the long/short pair ------------------------------------------------------------------------------------
# Layout of a pair dialogue (the collaboration protocol every stage uses: cold-start synthesis, pair SFT, RL
# episodes, inference)::
#
#     <|user|>problem<|end_turn|>
#     <|long|>important thought(s)<|end_turn|>          the long role always opens
#     <|short|>concise steps<|end_turn|>                 END_TURN: hand control back to the long role
#     <|long|>next important thought(s)<|end_turn|>
#     <|short|>concise steps ... \boxed{answer}<|endoftext|>   EOS: the short role finishes with the answer
#
# Roles strictly alternate, long first. Only the short role finishes: an EOS written by the long role is read as
# END_TURN (``PAIR_RULES.canonical`` rewrites it). A dialogue fails (unfinished, no answer) when a turn is cut by the
# token limit or ``MAX_TURNS`` model turns pass without the short role finishing.
PAIR_ROLES = ("long", "short")
MAX_TURNS = 12  # model turns (long and short together) in one dialogue
PAIR_RULES = TurnRules(PAIR_ROLES, frozenset({"short"}), MAX_TURNS)
# Hawkeye (arXiv 2504.00424): a planner writes a concise CoT, a responder reads the problem and that CoT and answers.
# The planner writes under the assistant header (its base model's), the responder under the short (answering) one:
#     <|user|>problem<|end_turn|><|assistant|>concise CoT<|end_turn|><|short|>answer<|endoftext|>
PLANNER_RESPONDER_ROLES = ("planner", "responder")
PLANNER_RESPONDER_RULES = TurnRules(PLANNER_RESPONDER_ROLES, frozenset({"responder"}), 2,
                                    headers=(("planner", "assistant"), ("responder", "short")))
# A single model answering alone: one assistant turn, which finishes the dialogue.
SINGLE_RULES = TurnRules(("assistant",), frozenset({"assistant"}), 1)


def check_pair_dialogue(messages: list[Message], max_turns: int = MAX_TURNS) -> str | None:
    """Why ``messages`` is not a well-formed finished pair dialogue (None when it is): a user turn, then
    alternating long/short turns starting with long and ending with short, at most ``max_turns`` of them."""
    if not messages or messages[0].role != "user":
        return "the dialogue must open with the user's problem"
    turns = messages[1:]
    if not turns:
        return "no model turn"
    for i, m in enumerate(turns):
        if m.role != PAIR_RULES.role(i):
            return f"turn {i + 1} is {m.role!r}, expected {PAIR_RULES.role(i)!r} (roles alternate, long first)"
    if turns[-1].role != "short":
        return "the last turn must be the short role's answer"
    if len(turns) > max_turns:
        return f"{len(turns)} model turns, more than max_turns={max_turns}"
    return None
