"""Query-time alias machinery: the identity of a name, the union of alias groups, and BM25 query expansion.

Alias groups are mined from the notes and a user glossary at ingest (`ingest/glossary.py`) and stored with the
index; the engine and the retriever only read them through `AliasIndex`. `member_key` says when two spellings
are the same name ("GPT-3" == "gpt3"), `merge_groups` joins groups that share a name, and `AliasIndex` finds
the names of a question and adds their groups' other names to the BM25 query. The public patterns and keys
below (`LATIN_WORD`, `latin_key`, `clean_member`...) are also read by the miners in `ingest/`, so both sides
agree on what a name is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rag.text import CJK_CHARS, HAS_CJK, STOPWORDS, Tokenizer, base_forms, normalize, singular

LATIN_WORD = re.compile(f"[^\\W_{CJK_CHARS}]+")  # letters/digits of any non-CJK script ("gpt", "3", "β")
SPACES = re.compile(r"\s+")
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_QUOTES = re.compile(r"[“”「」『』《》]")
SHORTENED_PART = 3  # each word of a name written shortened keeps at least this many letters ("layernorm")
MAX_SHORTENED_WORDS = 4
# The last word of an English name that only says what kind of thing it is: the words before it name it too
# ("exploding gradient problem", "gradient harmonized mechanism"), when there are at least two of them.
KIND_WORDS = frozenset(
    {"problem", "method", "algorithm", "mechanism", "technique", "phenomenon", "approach", "strategy", "principle"}
    | {"theorem", "theory", "function", "loss", "framework", "architecture"}
)
EDGE_PUNCT = " \t,、;:.!?。-–—'\"‘’"


# ----------------------------------------------------------------------------------------------- members


def clean_member(text: str) -> str:
    """A member as displayed: NFKC width folding, markdown and quotes removed, spaces collapsed, edges trimmed."""
    text = unicodedata.normalize("NFKC", text)
    text = MARKDOWN_LINK.sub(r"\1", MARKDOWN_IMAGE.sub(" ", text))
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = _QUOTES.sub("", text)
    text = SPACES.sub(" ", text).strip(EDGE_PUNCT)
    return text.strip()


def member_key(text: str) -> str:
    """Identity of a member: lowercased, width-folded, without spaces, '-', '_', '.' or '·' ("GPT-3" == "gpt3")."""
    return re.sub(r"[\s\-_.·]+", "", normalize(clean_member(text)))


def latin_key(text: str) -> str:
    """The letters and digits of a CJK-free member, lowercased and joined: 'Low-Rank Adaptation' -> 'lowrankadaptation'."""
    return "".join(LATIN_WORD.findall(normalize(text)))


def _singular_latin_key(text: str) -> str:
    """`latin_key` with the last word in the singular: 'Deep Neural Networks' -> 'deepneuralnetwork'."""
    words = LATIN_WORD.findall(normalize(text))
    return "".join([*words[:-1], singular(words[-1])]) if words else ""


# ------------------------------------------------------------------------------------------------- merge


def _is_acronym(member: str) -> bool:
    """A short capitalised abbreviation ("PLM", "PLMs", "MoE", "RLHF"): the kind of name two notes reuse for
    different things."""
    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9]{1,5}", member)) and sum(ch.isupper() for ch in member) >= 2


def merge_groups(*group_lists: Iterable[Sequence[str]]) -> list[list[str]]:
    """Union of alias groups: groups sharing a member (by `member_key`) become one.

    An acronym that is the only link between groups spelling it out differently in English ("PLM" of
    "Pre-trained Language Model" and of "Permutation Language Model") is ambiguous: it joins each of those
    groups instead of merging them. Members keep their first-seen spelling and order; groups are ordered
    by their first-seen member; groups with fewer than two distinct members are dropped.
    """
    parent: dict[str, str] = {}
    display: dict[str, str] = {}
    order: dict[str, int] = {}
    acronyms: set[str] = set()
    raw: list[list[str]] = []

    def find(key: str) -> str:
        root = key
        while parent[root] != root:
            root = parent[root]
        while parent[key] != root:
            parent[key], key = root, parent[key]
        return root

    def union(a: str, b: str) -> None:
        a, b = find(a), find(b)
        if a != b:
            if order[a] > order[b]:
                a, b = b, a
            parent[b] = a

    for groups in group_lists:
        for group in groups:
            keys: list[str] = []
            for member in group:
                shown = clean_member(member)
                key = member_key(shown)
                if not key or key in keys:
                    continue
                if key not in parent:
                    parent[key], display[key], order[key] = key, shown, len(order)
                if _is_acronym(shown):
                    acronyms.add(key)
                keys.append(key)
            if len(keys) >= 2:
                raw.append(keys)
    for keys in raw:
        strong = [key for key in keys if key not in acronyms] or keys
        for key in strong[1:]:
            union(strong[0], key)
    spelled_out = {key for key in parent if key not in acronyms and not HAS_CJK.search(display[key])}
    shared: dict[str, set[str]] = {}
    for acronym in sorted(acronyms, key=order.__getitem__):
        homes = {find(k) for keys in raw if acronym in keys for k in keys if k not in acronyms}
        expansions = {home for home in homes if any(find(k) == home for k in spelled_out)}
        if len(expansions) >= 2:
            shared[acronym] = homes  # spelled out differently in different places: keep the groups apart
            continue
        for home in homes:
            union(home, acronym)
    members: dict[str, set[str]] = {}
    for key in parent:
        if key not in shared:
            members.setdefault(find(key), set()).add(key)
    for acronym, homes in shared.items():
        for home in homes:
            members[find(home)].add(acronym)
    groups = [sorted(keys, key=order.__getitem__) for keys in members.values() if len(keys) >= 2]
    groups.sort(key=lambda keys: order[keys[0]])
    return [[display[key] for key in keys] for keys in groups]


# ---------------------------------------------------------------------------------------- query expansion


@dataclass(frozen=True, slots=True)
class _Member:
    group: int
    text: str


@dataclass(frozen=True, slots=True)
class _Match:
    start: int  # span in the query without spaces
    end: int
    member: _Member


class AliasIndex:
    """Alias groups ready to expand BM25 queries: a name in the query brings in its group's other names.

    Latin names match whole words, ignoring case and '-', '_', '.', spaces ("GPT3" finds "GPT-3"); names with
    Chinese characters match as substrings. Names shorter than two letters or digits, numbers, stopwords and
    `ignore`d names (say, words too frequent in the corpus) never trigger an expansion.
    """

    def __init__(
        self,
        groups: Iterable[Sequence[str]],
        expansion_weight: float = 0.5,
        max_added_tokens: int = 32,
        ignore: Iterable[str] = (),
        group_tokens: float = 5.0,
    ) -> None:
        self.groups: list[list[str]] = merge_groups(groups)
        self.expansion_weight = expansion_weight
        self.max_added_tokens = max_added_tokens
        self.group_tokens = group_tokens
        ignored = {member_key(term) for term in ignore}
        self._latin: dict[str, list[_Member]] = {}  # by latin_key
        self._other: dict[str, list[_Member]] = {}  # by member_key
        # Latin names of several words, by their words, under their first word's first SHORTENED_PART letters
        # (which a shortened spelling of them begins with)
        self._phrases: dict[str, list[tuple[tuple[str, ...], _Member]]] = {}
        for index, group in enumerate(self.groups):
            for text in group:
                latin = not HAS_CJK.search(text)
                key = latin_key(text) if latin else member_key(text)
                if (
                    len(key) < 2
                    or key.isdigit()
                    or normalize(text) in STOPWORDS
                    or member_key(text) in ignored
                ):
                    continue
                (self._latin if latin else self._other).setdefault(key, []).append(_Member(index, text))
                words = LATIN_WORD.findall(normalize(text)) if latin else []
                if 2 <= len(words) <= MAX_SHORTENED_WORDS and len(words[0]) >= SHORTENED_PART:
                    prefix = words[0][:SHORTENED_PART]
                    self._phrases.setdefault(prefix, []).append((tuple(words), _Member(index, text)))
                if latin and (plain := _singular_latin_key(text)) != key and len(plain) >= 2:
                    # "RNNs" in a question finds "RNN", "language model" finds "Language Models"
                    self._latin.setdefault(plain, []).append(_Member(index, text))
                if latin and len(words) >= 3 and words[-1] in KIND_WORDS:
                    # "exploding gradients" names the "exploding gradient problem"
                    self._latin.setdefault("".join(words[:-1]), []).append(_Member(index, text))
        self._longest_latin = max((len(key) for key in self._latin), default=0)

    def __len__(self) -> int:
        return len(self.groups)

    def _matches(self, tokens: Sequence[str], query_text: str) -> list[_Match]:
        """Names found in the query, minus those inside a longer match of another group, in query order."""
        norm = normalize(query_text)
        compact = SPACES.sub("", norm)
        offset = [0] * (len(norm) + 1)  # position in `compact` of each position in `norm`
        for i, ch in enumerate(norm):
            offset[i + 1] = offset[i] + (0 if ch.isspace() else 1)
        found: list[_Match] = []
        words = [(m.group(), m.start(), m.end()) for m in LATIN_WORD.finditer(norm)]
        for i in range(len(words)):
            joined = ""
            for j in range(i, len(words)):
                if j > i and not re.fullmatch(r"[\s\-_./·]*", norm[words[j - 1][2] : words[j][1]]):
                    break  # only separators may stand between the words of one name
                head = joined
                if len(head) >= self._longest_latin:
                    break  # no name is longer than the words before this one
                joined += words[j][0]
                plain = head + singular(words[j][0])
                keys = (joined,) if plain == joined else (joined, plain)
                members = dict.fromkeys(m for key in keys for m in self._latin.get(key, ()))
                if not members:  # "overfitting" names the glossary's "overfit"
                    forms = [head + form for form in base_forms(words[j][0])]
                    members = dict.fromkeys(m for key in forms for m in self._latin.get(key, ()))
                if not members and j == i:  # "LayerNorm" names "Layer Normalization": the group, as spelled
                    phrases = self._phrases.get(joined[:SHORTENED_PART], ())
                    groups = dict.fromkeys(m.group for parts, m in phrases if shortens(joined, parts))
                    members = dict.fromkeys(_Member(group, words[i][0]) for group in groups)
                for member in members:
                    found.append(_Match(offset[words[i][1]], offset[words[j][2]], member))
        for key, members in self._other.items():
            start = compact.find(key)
            while start >= 0:
                if _latin_boundary(compact, start, start + len(key)):
                    found.extend(_Match(start, start + len(key), member) for member in members)
                start = compact.find(key, start + 1)
        for token in tokens:  # tokens that do not come from the query text (a rewritten question, say)
            key = SPACES.sub("", normalize(token))
            if key and key not in compact:
                for member in self._latin.get(latin_key(key), []) + self._other.get(member_key(key), []):
                    found.append(_Match(len(compact), len(compact), member))
        kept = [
            match
            for match in found
            if not any(
                other.member.group != match.member.group
                and other.start <= match.start
                and match.end <= other.end
                and other.end - other.start > match.end - match.start
                for other in found
            )
        ]
        return sorted(kept, key=lambda match: (match.start, match.member.group))

    def expand_explained(
        self, tokens: Sequence[str], tokenizer: Tokenizer, query_text: str
    ) -> tuple[dict[str, float], list[dict]]:
        """Weighted BM25 query and, per matched group, {"matched", "added", "tokens"} for the explanation.

        Original tokens weigh 1.0. For each group named in the query, the tokens of its other names, and of
        the matched name itself when the query spells it differently ("gpt3" for "GPT-3"), are added with
        `added_weight` unless already present; at most `max_added_tokens` in all.
        """
        weights: dict[str, float] = dict.fromkeys(tokens, 1.0)
        matched: dict[int, list[str]] = {}
        for match in self._matches(tokens, query_text):
            names = matched.setdefault(match.member.group, [])
            if match.member.text not in names:
                names.append(match.member.text)
        explanation: list[dict] = []
        for group, names in matched.items():
            keys = {member_key(name) for name in names}
            others = [member for member in self.groups[group] if member_key(member) not in keys]
            added = self.add_names(weights, names + others, tokenizer, explanation)
            explanation.append({"matched": names[0], "added": others, "tokens": added})
        return weights, explanation

    def add_names(
        self, weights: dict[str, float], names: Sequence[str], tokenizer: Tokenizer, expansions: Sequence[dict]
    ) -> list[str]:
        """Add the tokens of one group's `names` that `weights` lacks, at `added_weight`, within what
        `max_added_tokens` leaves after the `expansions` made so far; returns the tokens added."""
        budget = self.max_added_tokens - sum(len(item["tokens"]) for item in expansions)
        added: list[str] = []
        for name in names:
            for token in tokenizer.tokenize(name):
                if token not in weights and token not in added and len(added) < budget:
                    added.append(token)
        weights.update(dict.fromkeys(added, self.added_weight(len(added))))
        return added

    def added_weight(self, n_tokens: int) -> float:
        """Weight of each of the `n_tokens` tokens one group adds: `expansion_weight`, shared out once a group
        adds more than `group_tokens` of them, so a concept with many names is not counted many times over
        (a passage listing all five names of 强化学习 would otherwise outscore one that answers the question)."""
        return self.expansion_weight * min(1.0, self.group_tokens / max(n_tokens, 1))

    def expand(self, tokens: Sequence[str], tokenizer: Tokenizer, query_text: str) -> dict[str, float]:
        """The weighted BM25 query of `expand_explained`, without the explanation."""
        return self.expand_explained(tokens, tokenizer, query_text)[0]


def shortens(word: str, parts: Sequence[str]) -> bool:
    """Whether `word` writes the name of several words `parts` shortened, as one word of their beginnings, each
    at least SHORTENED_PART letters ("layernorm" of "layer normalization", "convnet" of "convolutional
    network"); not the words in full, which the keys match already."""
    if len(parts) < 2 or len(word) < 2 * SHORTENED_PART or word == "".join(parts):
        return False

    def rest(word: str, parts: Sequence[str]) -> bool:
        if not parts:
            return not word
        head = parts[0]
        return any(
            word[:k] == head[:k] and rest(word[k:], parts[1:])
            for k in range(min(len(head), len(word)), SHORTENED_PART - 1, -1)
        )

    return rest(word, parts)


def _latin_boundary(text: str, start: int, end: int) -> bool:
    """A match of a CJK or mixed member must not cut a Latin word at its Latin edges."""

    def latin(ch: str) -> bool:
        return bool(LATIN_WORD.fullmatch(ch))

    if start > 0 and latin(text[start]) and latin(text[start - 1]):
        return False
    return not (end < len(text) and latin(text[end - 1]) and latin(text[end]))


def glossary_report(groups: list[list[str]], ingest_summary: dict) -> dict:
    """The glossary as `GET /glossary` and `rag glossary` show it: the groups, where each came from ("notes",
    "user" or "notes+user", by the user glossary recorded at ingest) and the user's removals that took effect."""
    user_keys = {member_key(m) for group in ingest_summary.get("user_glossary") or [] for m in group}
    sources = []
    for group in groups:
        mine = [member_key(m) in user_keys for m in group]
        sources.append("user" if all(mine) else "notes+user" if any(mine) else "notes")
    return {"groups": groups, "sources": sources, "removed": list(ingest_summary.get("glossary_removed") or [])}
