"""The caption spec, implemented plainly: one post at a time, tags as strings, no tag codes,
no threads, no tables. It is what captions mean; ``build_captions`` (the fast path) must
give the same bytes for every spec and post (``test_reference.py``).

The rules, in order (docs/CAPTIONS.md says them for users):

1. Implied tags pruned (``prune_implied``): a raw tag another raw tag of the post implies.
2. Per tag: alias, then dropped (empty, blacklist, meta filter: names or ``*``/``?`` globs on
   the aliased tag), then written (underscores to spaces unless the tag is 3 characters or
   fewer or has no letter; parentheses escaped).
3. Per post: categories in order; with a keep-tokens separator the fixed categories first;
   people-count tags first (``people_first``); extra tags (rating, quality, date) first or
   last; duplicates removed (first kept); at most ``max_tags``.
4. Text: tags joined by the separator; the fixed head, `` ||| ``, the rest; merged with the
   NL texts by ``merge``.
5. A token budget: items in priority order (head tags in caption order, the NL text, other tags by
   rarity/commonness/order, meta tags); the longest prefix whose additive cost fits; the NL
   text cut to the room left at a word boundary; then, while the line is over (counted
   whole), the last item in priority order goes (a tag), or the NL text loses its last word.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from e6ingest.captions.codes import EMOTICON_MAX_LEN, PEOPLE_PATTERN
from e6ingest.captions.spec import CaptionSpec
from e6ingest.captions.tokens import count_tokens, cut_to_tokens

CATEGORIES = ("general", "artist", "character", "copyright", "meta", "species", "lore",
              "invalid")  # fmt: skip
HEAD, NL, TAG, META = 0, 1, 2, 3


def _glob(pattern: str) -> re.Pattern:
    return re.compile("^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$")


@dataclass
class Context:
    """What captions of one spec read besides the post."""

    spec: CaptionSpec
    nl: dict  # id -> list of NL texts
    aliases: dict
    rarity: dict | None  # written tag -> posts
    implied: set | None  # (antecedent, implied) raw tags
    thresholds: dict  # rating -> score each quality tier starts at

    def __post_init__(self) -> None:
        patterns = self.spec.blacklist + self.spec.meta_filter
        self.names = {p for p in patterns if "*" not in p and "?" not in p}
        self.globs = [_glob(p) for p in patterns if p not in self.names]


def quality_thresholds(posts: list[dict], spec: CaptionSpec) -> dict:
    """Per rating, the score each quality tier starts at (percentile, "higher" value)."""
    scores: dict = {}
    for post in posts:
        if post["score"] is not None:
            scores.setdefault(post["rating"], []).append(post["score"])
    return {
        rating: [sorted(s)[math.ceil(p * (len(s) - 1))] for _, p in spec.quality_tiers]
        for rating, s in scores.items()
    }


def _written(tag: str, ctx: Context) -> tuple[str, bool, bool] | None:
    """The written text of a raw tag, whether it counts people and whether it is a subject
    tag; None when dropped."""
    spec = ctx.spec
    tag = ctx.aliases.get(tag, tag)
    if tag == "" or tag in ctx.names or any(g.match(tag) for g in ctx.globs):
        return None
    people = re.search(PEOPLE_PATTERN, tag) is not None
    subject = tag in spec.subject_tags
    return _writing(tag, spec), people, subject


def _writing(tag: str, spec: CaptionSpec) -> str:
    """A tag as ``spec`` writes it: underscores to spaces (not in emoticons), parentheses
    escaped."""
    text = tag
    if spec.underscores_to_spaces and len(text) > EMOTICON_MAX_LEN and re.search("[A-Za-z]", text):
        text = text.replace("_", " ")
    if spec.escape_parentheses:
        text = text.replace("(", r"\(").replace(")", r"\)")
    return text


def written_rarity(vocabulary: dict | None, spec: CaptionSpec) -> dict | None:
    """Posts per tag as ``spec`` writes it, from the dataset's posts per tag."""
    if vocabulary is None:
        return None
    posts: dict = {}
    for tag, n in vocabulary.items():
        text = _writing(tag, spec)
        posts[text] = posts.get(text, 0) + n
    return posts


def _extras(post: dict, ctx: Context) -> list[str]:
    spec, site = ctx.spec, post["site"]
    extras = []
    if spec.rating_tag:
        extras.append(spec.ratings(site).get(post["rating"]))
    if spec.quality_tag:
        tier = None
        starts = ctx.thresholds.get(post["rating"])
        if starts is not None and post["score"] is not None:
            for (name, _), start in zip(spec.quality_tiers, starts, strict=True):
                if post["score"] >= start:
                    tier = name
                    break
        extras.append(tier)
    if spec.date_tag != "none" and post["created_at"] is not None:
        year = post["created_at"].year
        if spec.date_tag == "year":
            extras.append(f"year {year}")
        else:
            extras.append(next((n for n, first in reversed(spec.periods) if year >= first), None))
    return [e for e in extras if e is not None]


def _dedupe(tags: list[str], on: bool) -> list[str]:
    return list(dict.fromkeys(tags)) if on else list(tags)


def _lists(post: dict, ctx: Context) -> dict:
    """The caption's tag lists: ``whole``, ``head`` (before the keep-tokens separator),
    ``keep`` and ``meta`` (the budget's first and last classes)."""
    spec = ctx.spec
    raw = {c: [t if t is not None else "" for t in (post.get(f"tags_{c}") or [])]
           for c in CATEGORIES}  # fmt: skip
    if ctx.implied:
        every = {t for tags in raw.values() for t in tags}
        gone = {b for a, b in ctx.implied if a in every}
        raw = {c: [t for t in tags if t not in gone] for c, tags in raw.items()}
    categories = spec.categories(post["site"])
    split = bool(spec.keep_tokens_separator)
    fixed = [c for c in categories if c in spec.fixed_categories] if split else list(categories)
    ordered = fixed + [c for c in categories if c not in fixed]

    written = {c: [w for w in (_written(t, ctx) for t in tags) if w is not None]
               for c, tags in raw.items()}  # fmt: skip

    def part(category: str, people: bool | None = None, subject: bool = False) -> list[str]:
        kept = written[category]
        wanted = [(p is None or people is None or p == people) and (s or not subject)
                  for _, p, s in kept]  # fmt: skip
        return [text for (text, _, _), keep in zip(kept, wanted, strict=True) if keep]

    extras = _extras(post, ctx)
    people = [t for c in ordered for t in part(c, True)]
    placed = False if spec.people_first else None
    head = (people if spec.people_first else []) + (extras if spec.extras_first else [])
    head += [t for c in fixed for t in part(c, placed)]
    tail = [t for c in ordered[len(fixed) :] for t in part(c, placed)]
    tail += [] if spec.extras_first else extras
    whole = _dedupe(head + tail, spec.dedupe)
    if spec.max_tags:
        whole = whole[: spec.max_tags]
    heads = (*spec.fixed_categories, *spec.subject_categories)
    named = [t for c in categories if c in heads for t in part(c)]
    subjects = [t for c in ordered for t in part(c, subject=True)]
    meta = part("meta") if "meta" in categories else []
    keep = set(people + named + subjects + extras)
    return {"whole": whole, "head": _dedupe(head, spec.dedupe), "keep": keep, "meta": set(meta)}


def _tags_text(spec: CaptionSpec, whole: list[str], n_head: int, nl: str = "") -> str:
    """The tag part; with ``nl`` (NL text in the head), the NL text joins the head."""
    sep = spec.separator
    if not spec.keep_tokens_separator:
        fixed = sep.join(whole)
        return (nl + sep + fixed).strip(" ,") if nl else fixed
    fixed, rest = sep.join(whole[:n_head]), sep.join(whole[n_head:])
    if nl:
        fixed = (fixed + sep + nl).strip(" ,")
    if not fixed and not rest:
        return ""
    return (fixed + f" {spec.keep_tokens_separator} " + rest).strip(" ")


def _render(spec: CaptionSpec, whole: list[str], n_head: int, nl: list[str]) -> tuple[str, str]:
    """(caption, caption_tags) of kept tags and NL texts."""
    tags = _tags_text(spec, whole, n_head)
    text = " ".join(nl)
    mode = spec.merge_mode
    if mode == "tags+nl" and spec.nl_position == "head":
        return (_tags_text(spec, whole, n_head, text) if nl else tags), tags
    if mode == "tags":
        return tags, tags
    if mode == "nl":
        return (text if nl else tags), tags
    if mode == "tags+nl":
        return spec.separator.join(p for p in (tags, text) if p), tags
    return "\n".join(p for p in [tags, *nl] if p), tags  # alternatives


class Costs:
    """Token counts of texts, counted once."""

    def __init__(self) -> None:
        self.known: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        if text not in self.known:
            self.known[text] = count_tokens([text])[0]
        return self.known[text]


def _priority(whole: list[str], lists: dict, ctx: Context) -> list[tuple[int, int]]:
    """(class, position) of each tag of ``whole``, in the order a budget keeps them (the
    head in caption order)."""
    spec = ctx.spec
    ranked = []
    for pos, tag in enumerate(whole):
        cls = HEAD if tag in lists["keep"] else META if tag in lists["meta"] else TAG
        if ctx.rarity is not None and spec.token_priority != "order" and cls != HEAD:
            key = ctx.rarity.get(tag, 0) * (1 if spec.token_priority == "rare" else -1)
        else:
            key = pos
        ranked.append((cls, key, pos))
    return [(cls, pos) for cls, _, pos in sorted(ranked)]


def _budget(post: dict, lists: dict, ctx: Context, costs: Costs) -> tuple[str, str]:
    spec, budget = ctx.spec, ctx.spec.max_tokens
    mode, sep = spec.merge_mode, spec.separator
    whole, texts = lists["whole"], ctx.nl.get(post["id"], [])
    joined = " ".join(texts)
    mark = sep.strip()
    additive = sep[-1:].isspace()
    sep_cost = costs(mark) if mark else 0

    def cost(tag: str) -> int:
        if additive:
            return costs(tag + mark) if mark else costs(tag)
        return costs(tag) + sep_cost

    order = _priority(whole, lists, ctx)
    items = [(cls, pos, cost(whole[pos])) for cls, pos in order]
    with_nl = mode == "tags+nl" and costs(joined) > 0
    if with_nl:
        at = sum(1 for cls, _, _ in items if cls == HEAD)
        items.insert(at, (NL, -1, costs(joined) + sep_cost))
    limit, spent, kept, nl = budget + sep_cost, 0, [], ""
    for cls, pos, c in items:
        if spent + c > limit:
            if cls == NL:
                room = limit - spent - sep_cost
                nl = "" if room <= 0 else cut_to_tokens([joined], [room])[0]
            break
        spent += c
        kept.append((cls, pos))
        if cls == NL:
            nl = joined
    if mode == "nl":
        texts = [t for t in cut_to_tokens([joined], [budget]) if t]
    elif mode == "alternatives":
        texts = [t for t in cut_to_tokens(texts, [budget] * len(texts)) if t]
    elif mode == "tags+nl":
        texts = [nl] if nl else []
    return _repair(kept, whole, lists, texts, ctx, costs)


def _repair(kept, whole, lists, texts, ctx, costs) -> tuple[str, str]:
    """The line as kept; while over the budget, the last tag in priority order goes, then
    the NL text's last word, then the head's last tag."""
    spec, budget = ctx.spec, ctx.spec.max_tokens
    head_end = min(len(lists["head"]), len(whole))  # head tags open the whole list
    while True:
        positions = sorted(pos for cls, pos in kept if cls != NL)
        tags = [whole[pos] for pos in positions]
        n_head = sum(1 for pos in positions if pos < head_end)
        caption, caption_tags = _render(spec, tags, n_head, texts)
        line = caption.split("\n", 1)[0] if spec.merge_mode == "alternatives" else caption
        if costs(line) <= budget:
            return caption, caption_tags
        others = [k for k in kept if k[0] in (TAG, META)]
        heads = [k for k in kept if k[0] == HEAD]
        if others:
            kept.remove(others[-1])
        elif spec.merge_mode in ("tags+nl", "nl") and texts:
            fewer = cut_to_tokens(texts[:1], [costs(texts[0]) - 1])[0]
            texts = [fewer] if fewer else []
        elif heads:
            kept.remove(heads[-1])
        else:
            return caption, caption_tags


def caption_of(post: dict, ctx: Context, costs: Costs) -> tuple[str, str]:
    """(caption, caption_tags) of one post."""
    lists = _lists(post, ctx)
    if ctx.spec.max_tokens:
        return _budget(post, lists, ctx, costs)
    texts = ctx.nl.get(post["id"], [])
    n_head = min(len(lists["head"]), len(lists["whole"]))
    return _render(ctx.spec, lists["whole"], n_head, texts)


def reference_captions(posts: list[dict], spec: CaptionSpec, nl=None, aliases=None,
                       vocabulary=None, implied=None) -> list[tuple[str, str]]:  # fmt: skip
    """(caption, caption_tags) of each post (dicts of canonical columns), in order;
    ``vocabulary``: the dataset's posts per tag (as it has tags), for a budget's priority."""
    ctx = Context(spec, nl or {}, aliases or {}, written_rarity(vocabulary, spec),
                  implied if spec.prune_implied else None,
                  quality_thresholds(posts, spec) if spec.quality_tag else {})  # fmt: skip
    costs = Costs()
    return [caption_of(post, ctx, costs) for post in posts]
