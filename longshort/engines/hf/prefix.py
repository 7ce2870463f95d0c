"""Shared-prefix prefill for the HF engine: rows whose prompts are prefixes of one another are prefilled once.

The score stage rolls out from every prefix of a long CoT (and ``n`` samples of one prompt are identical rows): a
padded batch prefill recomputes the shared tokens once per row. Here only the *roots* (contexts that are no prefix
of another row's) are prefilled, and every row's KV cache is copied out of its root's. A causal model's keys and
values at a position depend only on the tokens up to it, so the copy is what the row's own prefill would compute
(equal up to float rounding of other matrix shapes). The context of a row is its prompt but the last token: that
token goes through the model as the first decode step, which gives each row its own first logits without a
per-position output head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from longshort.engines.hf.kv_cache import GrowingLayer, new_cache


def group_by_prefix(contexts: list[list[int] | None]) -> list[int]:
    """For each context, the index of a root context that starts with it (itself if none does).

    ``None`` (a row prefilled from its own embeddings) shares with nothing. Sorted lexicographically, the
    contexts that extend a context K come right after it; walking backwards, the root of K's successor (which
    starts with K's successor) starts with K exactly when K's successor does."""
    root = list(range(len(contexts)))
    order = sorted((i for i, c in enumerate(contexts) if c is not None), key=lambda i: contexts[i])
    current: int | None = None
    for i in reversed(order):
        c = contexts[i]
        if current is not None and contexts[current][: len(c)] == c:
            root[i] = current
        else:
            current = i
    return root


def prefill(model, contexts: list[list[int]], embeds: list[torch.Tensor | None], pad: int, cache_kw: Callable):
    """The KV cache of every row's context, left-padded to the longest, and its mask. Only the contexts that are
    no prefix of another row's go through ``model``; the others are cut from theirs. ``embeds[i]``: row i's
    prompt embeddings (its context is the first ``len(contexts[i])``), or None. ``cache_kw``: the forward argument
    that takes the cache."""
    dev = next(model.parameters()).device
    cache = new_cache(model.config)
    width = max(len(c) for c in contexts)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for i, c in enumerate(contexts):
        mask[i, width - len(c) :] = 1
    mask = mask.to(dev)
    share = shares_layers(cache)
    root = group_by_prefix([c if share and e is None else None for c, e in zip(contexts, embeds, strict=True)])
    if width == 0:  # one-token prompts only: nothing to prefill
        return cache, mask
    # An empty context joins any root; rows that share nothing are all fed (a one-token prompt then as an all-pad
    # row, as a shorter prompt's padding always was), so a cache that cannot be cut is never cut.
    fed = sorted(set(root))
    ids = torch.full((len(fed), width), pad, dtype=torch.long)
    for p, i in enumerate(fed):
        ids[p, width - len(contexts[i]) :] = torch.tensor(contexts[i])
    ids, fed_mask = ids.to(dev), mask[fed]
    prompt = {"input_ids": ids}
    if any(embeds[i] is not None for i in fed):  # soft tokens: the prefill reads embeddings, decoding ids
        emb = model.get_input_embeddings()(ids)
        for p, i in enumerate(fed):
            if embeds[i] is not None:
                emb[p, width - len(contexts[i]) :] = embeds[i][: len(contexts[i])].to(emb.device, emb.dtype)
        prompt = {"inputs_embeds": emb}
    model(**prompt, attention_mask=fed_mask, position_ids=(fed_mask.cumsum(-1) - 1).clamp(min=0), **cache_kw(cache),
          use_cache=True, logits_to_keep=1)
    if fed == list(range(len(contexts))):  # nothing shared: the prefilled cache is the rows' own
        return cache, mask
    slot = {i: p for p, i in enumerate(fed)}
    sources = [(slot[root[i]], width - len(contexts[root[i]]), len(c)) if c else (0, 0, 0)
               for i, c in enumerate(contexts)]
    return gather(model.config, cache, sources, width), mask


def shares_layers(cache) -> bool:
    """Only full-attention layers keep every position (a sliding-window layer drops the prefix a shorter row
    needs), so only then can one row's cache be cut from another's."""
    return all(type(layer) is GrowingLayer for layer in cache.layers)


def gather(config, prefilled, sources: list[tuple[int, int, int]], width: int):
    """A new cache of ``len(sources)`` rows and ``width`` positions: row i holds positions ``[start, start + n)``
    of ``prefilled``'s row ``src`` (``sources[i] = (src, start, n)``) right-aligned, zeros before them (masked
    slots must hold finite values). ``prefilled``'s buffers are released layer by layer."""
    out = new_cache(config)
    for li, layer in enumerate(prefilled.layers):
        keys, values = layer.keys, layer.values
        k = keys.new_zeros((len(sources), keys.shape[1], width, keys.shape[-1]))
        v = values.new_zeros((len(sources), values.shape[1], width, values.shape[-1]))
        for i, (src, start, n) in enumerate(sources):
            if n:
                k[i, :, width - n :] = keys[src, :, start : start + n]
                v[i, :, width - n :] = values[src, :, start : start + n]
        out.update(k, v, li)
        layer.keys = layer.values = layer._kbuf = layer._vbuf = None
    return out
