"""Alias groups mined from the notes themselves and from a user glossary, and heading terms for the tokenizer.

The notes are largely a glossary and name their own aliases: "### 张量(tensor)", "LoRA(LOW-RANK ADAPTATION,
低秩适配)", "代价函数(Cost Function)也称损失函数(Loss Function)", "灾难性遗忘（Catastrophic Forgetting）是指…".
Only short heading-like contexts are read (headings, outline term lines, bold lead terms, "X(Y)：" definition
lines, and the subject at the start of each heading's opening sentence), so prose parentheses are not taken
for aliases. Everything here is pattern based: no per-term lists. A heading-like string is parsed into groups
by `ingest/alias_patterns.py`; the groups are merged, and later used at query time, by `rag/aliases.py`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from ingest.alias_patterns import (
    ABBREVIATION_OF,
    ALIAS_CONN,
    DIGITS,
    MAX_STRICT_CJK_CHARS,
    MEMBER_PREFIX,
    PURE_CJK,
    SEPARATOR,
    SPLIT_CONN,
    URL,
    dedupe_members,
    member_status,
    parse_term_string,
    prepare_text,
    split_parens,
    split_segments,
    term_members,
)
from rag.aliases import EDGE_PUNCT, LATIN_WORD, MARKDOWN_IMAGE, SPACES, clean_member, member_key, merge_groups
from rag.text import CJK_CHARS, HAS_CJK, STOPWORDS, normalize
from rag.types import Document

log = logging.getLogger(__name__)

_STARTS_WITH_CONN = re.compile(f"^\\s*(?:{ALIAS_CONN})")
# Connectors strong enough to make "X conn Y" an alias statement without parentheses (not a bare 或).
_STRONG_CONN = re.compile(ALIAS_CONN.replace("|或者|", "|").replace("|或(?![许是])", ""))
_OUTLINE = re.compile(r"^\s*(?:[•·▪◦●\-*+]\s+|\d+(?:\.\d+)*[.)]?\s+|\d+、\s*)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s*(.*?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"[。!?;\n]|\.(?=\s|$)")
_FULL_NAME_IS = re.compile(r"^(.{1,20}?)的全称是\s*(.+)$")  # "WOE的全称是“Weight of Evidence”"
_IS_ABBREVIATION_OF = re.compile(r"^(?:(.{1,20}?)\s*)?是\s*(.+?)\s*的(?:首字母)?(?:缩写|简称|简写)$")
_HEADING_PART_SPLIT = re.compile(
    rf"[()\[\]{{}}<>【】“”\"‘’'「」『』《》,、;:。!?|/\\&+]|{ALIAS_CONN}|{SPLIT_CONN}"
)
_DEFINITION_LINE = re.compile(r"^\s*[^()\s:][^():]{0,30}\([^()]{1,80}\)\s*:")


# ------------------------------------------------------------------------------- heading-like contexts


def _split_clauses(sentence: str) -> list[str]:
    """Clauses of a sentence at top-level ',' and ':' (after NFKC), parentheses kept whole."""
    clauses: list[str] = []
    buf: list[str] = []
    depth = 0
    for ch in sentence:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if depth == 0 and ch in ",:":
            clauses.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    clauses.append("".join(buf))
    return [c for c in clauses if c.strip()]


def _first_sentence(text: str) -> str:
    """Text up to the first sentence end at parenthesis depth 0."""
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and _SENTENCE_END.match(text, i):
            return text[:i]
    return text


def _is_term_like(text: str) -> bool:
    """A short single name that could head a definition ("采样频率", "OCR", "高斯噪声或白噪声")."""
    text = clean_member(text)
    return bool(text) and not re.search(r"[,、]", text) and member_status(text, strict=True) == "ok"


def _head_with_parens(clause: str) -> tuple[str, bool] | None:
    """For a clause "X(Y)rest": the part to keep ("" when X is not a name) and whether more clauses may follow.

    None when the clause does not start with a name followed by a parenthesis.
    """
    items = split_parens(clause)
    if len(items) < 2 or items[0][0] != "text" or items[1][0] != "paren" or not items[1][1].strip():
        return None
    if not _is_term_like(items[0][1]):
        return "", False
    kept = items[0][1]
    index = 1
    while index < len(items) and items[index][0] == "paren":
        kept += f"({items[index][1]})"
        index += 1
    rest = "".join(f"({value})" if kind == "paren" else value for kind, value in items[index:])
    if not rest.strip():
        return kept, True
    if _STARTS_WITH_CONN.match(rest):
        return clause, True  # "AIGC(AI Generated Content)即人工智能生成内容"
    if rest[:1].isspace() and PURE_CJK.match(rest.strip()) and len(rest.strip()) <= MAX_STRICT_CJK_CHARS:
        return kept + rest, False  # "Quantization Aware Training (QAT) 量化感知训练"
    return kept, False


def _opening_term_string(line: str, heading_term: str | None) -> str | None:
    """The alias-bearing head of an opening sentence or term line, as a term string, or None.

    Keeps the subject ("X(Y)", "X也叫Y", "X的全称是Y", "X是Y的缩写", or with the heading's name as X:
    "又称Y", "是Y的简称") and the clauses right after it that start with an alias connector ("，又称Z")
    or, after a Chinese subject, give its English name ("弱分类器，weak classifier"); stops at the first
    other clause.
    """
    sentence = _first_sentence(prepare_text(line)).strip()
    clauses = _split_clauses(sentence)
    if not clauses:
        return None
    if len(clauses) > 1 and not _STARTS_WITH_CONN.sub("", clauses[0]).strip():
        clauses = [clauses[0] + clauses[1], *clauses[2:]]  # "又称，乱序语言模型"
    first = clauses[0].strip()
    can_continue = True
    full_name = _FULL_NAME_IS.match(first)
    abbreviation = _IS_ABBREVIATION_OF.match(first) or ABBREVIATION_OF.match(first)
    with_parens = _head_with_parens(first)
    strong = _STRONG_CONN.search(first)
    if _STARTS_WITH_CONN.match(first):
        if not heading_term:
            return None
        head = f"{heading_term}即{_STARTS_WITH_CONN.sub('', first)}"
    elif full_name:
        if not _is_term_like(full_name.group(1)):
            return None
        head = f"{full_name.group(1)}即{full_name.group(2)}"
    elif abbreviation:
        subject = (abbreviation.group(1) if abbreviation.re is _IS_ABBREVIATION_OF else None) or heading_term
        expansion = abbreviation.group(abbreviation.re.groups)
        if not subject or not _is_term_like(subject):
            return None
        head, can_continue = f"{subject}即{expansion}", False
    elif with_parens is not None:
        head, can_continue = with_parens
        if not head:
            return None
    elif strong and _is_term_like(first[: strong.start()]):
        head = first  # "FP16也叫做 float16", "神经网络即人工神经网络"
    elif _is_term_like(first) and not SEPARATOR.search(first):
        head = first  # a bare subject; only an alias clause after it can make a group
    else:
        return None
    accepted = [head]
    subject_is_cjk = bool(PURE_CJK.match(clean_member(first)))
    if can_continue:
        for position, clause in enumerate(clauses[1:], start=1):
            text = clause.strip()
            alias_clause = bool(_STARTS_WITH_CONN.match(text)) and _clause_is_names(text)
            gloss = position == 1 and subject_is_cjk and _is_english_gloss(text)
            if not (alias_clause or gloss):
                break
            accepted.append(text)
    return ",".join(accepted)


def _clause_is_names(clause: str) -> bool:
    """Whether an alias clause ("又称再励学习、评价学习或增强学习") holds only names."""
    body = _STARTS_WITH_CONN.sub("", clause)
    segments = split_segments(body)
    return bool(segments) and all(
        term_members(segment.term, strict=True) is not None for segment, _ in segments
    )


def _is_english_gloss(text: str) -> bool:
    """A bare English name such as "weak classifier" or "sampling with replacement"."""
    text = clean_member(text)
    return (
        bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9' \-]*", text))
        and len(text) >= 3
        and member_status(text, True) == "ok"
    )


def _heading_primary_term(heading: str) -> str | None:
    """The first name of a heading ("排列语言模型" of "排列语言模型(Permutation Language Model, PLM)")."""
    segments = split_segments(prepare_text(heading))
    if not segments:
        return None
    names = term_members(segments[0][0].term, strict=False)
    return names[0] if names else None


def _term_line_content(line: str) -> str | None:
    """The content of an outline item, a bold lead term or a "X(Y)：" definition line; None for other lines."""
    stripped = unicodedata.normalize("NFKC", line).lstrip(" \t>")
    outline = _OUTLINE.match(stripped)
    body = stripped[outline.end() :] if outline else stripped
    if body.startswith("**"):
        end = body.find("**", 2)
        if end > 2:
            return body[2:end]
    if outline or _DEFINITION_LINE.match(body):
        return body
    return None


def _related(member: str, heading: str) -> bool:
    """Whether a name shares a Chinese character pair or a Latin word with a heading."""
    a, b = normalize(member), normalize(heading)
    cjk = {a[i : i + 2] for i in range(len(a) - 1) if PURE_CJK.match(a[i : i + 2])}
    if any(pair in b for pair in cjk):
        return True
    words = {w for w in LATIN_WORD.findall(a) if len(w) >= 2 and w not in STOPWORDS}
    return bool(words & set(LATIN_WORD.findall(b)))


def alias_groups_from_text(text: str) -> list[list[str]]:
    """Raw (unmerged) alias groups of one markdown note, in document order."""
    groups: list[list[str]] = []
    heading_term: str | None = None
    heading_text = ""
    awaiting_opening = False
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence or not line.strip() or line.lstrip().startswith("|"):
            continue
        heading = _HEADING.match(line)
        if heading:
            title = heading.group(2)
            groups.extend(parse_term_string(title))
            heading_term = _heading_primary_term(title)
            heading_text = title
            awaiting_opening = True
            continue
        content = _term_line_content(line)
        probe = URL.sub("", MARKDOWN_IMAGE.sub("", line)).strip()
        if awaiting_opening and not probe:
            continue  # an image or a bare link before the opening sentence
        opening = awaiting_opening
        awaiting_opening = False
        if content is None and not opening:
            continue
        source = content if content is not None else line
        term_string = _opening_term_string(source, heading_term if opening else None)
        if not term_string:
            continue
        found = parse_term_string(term_string, strict=True, join_all=True)
        if content is None:  # a plain opening sentence must be about its heading
            found = [group for group in found if any(_related(member, heading_text) for member in group)]
        groups.extend(found)
    return groups


def extract_alias_groups(documents: Iterable[Document]) -> list[list[str]]:
    """Alias groups found in the notes, merged across notes, in a deterministic order (notes by doc_id)."""
    raw: list[list[str]] = []
    for document in sorted(documents, key=lambda d: d.doc_id):
        raw.extend(alias_groups_from_text(document.text))
    return merge_groups(raw)


# ------------------------------------------------------------------------------------------- user glossary


def load_user_glossary(path: Path) -> list[list[str]]:
    """The groups a user's glossary file adds (see `read_user_glossary`)."""
    return read_user_glossary(path)[0]


def read_user_glossary(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """A user's glossary file: (groups it adds, removals). One entry per line, names separated by , ， | = or tabs.

    A line names a group to add. A line starting with '-' removes: "- X" removes the group holding X, and
    "- X = Y = Z" removes Y and Z from the group holding X (a removal is [X, Y, Z], or [X] for a whole group).
    Blank lines, lines starting with '#' and " # …" line ends are skipped; a group with fewer than two distinct
    names is ignored with a warning. A missing file yields nothing (with a warning).
    """
    if not path.is_file():
        log.warning("glossary %s not found; no user aliases", path)
        return [], []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", errors="replace")
    groups: list[list[str]] = []
    removals: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = re.sub(r"\s#.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        removal = line.startswith(("-", "－"))
        members = dedupe_members(
            m for m in (clean_member(p) for p in re.split(r"[,，|=\t]", line[1:] if removal else line)) if m
        )
        if removal and members:
            removals.append(members)
        elif len(members) < 2:
            log.warning("glossary %s line %d ignored: needs at least two distinct names", path, number)
        else:
            groups.append(members)
    return groups, removals


def apply_removals(
    groups: list[list[str]], removals: list[list[str]]
) -> tuple[list[list[str]], list[dict[str, list[str]]]]:
    """`groups` without what the user removed, and a record of each removal that took effect.

    A removal [X] drops the group holding X; [X, Y, …] drops Y, … from it (a group left with one name goes).
    Names match as aliases do ("GPT-3" == "gpt3"); a removal that matches nothing is logged and skipped.
    """
    kept = [list(g) for g in groups]
    records: list[dict[str, list[str]]] = []
    for removal in removals:
        anchor, drop = member_key(removal[0]), {member_key(m) for m in removal[1:]}
        # the group holding X (and, when names are given, one of them: an acronym may head several groups)
        index = next(
            (
                i for i, g in enumerate(kept)
                if anchor in (keys := {member_key(m) for m in g}) and (not drop or keys & drop)
            ),
            None,
        )
        if index is None:
            log.warning("glossary removal %r matches no alias group", " = ".join(removal))
            continue
        group = kept[index]
        gone = group if not drop else [m for m in group if member_key(m) in drop]
        records.append({"group": list(group), "removed": list(gone)})
        rest = [m for m in group if m not in gone]
        if len(rest) >= 2:
            kept[index] = rest
        else:
            del kept[index]
    return kept, records


# --------------------------------------------------------------------------------------- heading terms


def heading_terms(headings: Iterable[str], include_latin: bool = False) -> set[str]:
    """Domain terms for the tokenizer's user dictionary: each heading split into its names.

    Parts are cut at brackets, punctuation and alias connectors and stripped of markdown and outline
    markers; kept when 2-20 characters long and not a number or a stopword. "batch-size（训练选取样本数）" ->
    {"训练选取样本数"}, or {"batch-size", "训练选取样本数"} with `include_latin`.

    Latin parts are left out by default: jieba keeps Latin runs whole on its own, and a Latin user word
    makes it split every longer run that contains it ("ap" turns "adaptation" into "ad"/"ap"/"tation",
    "BERT" turns "RoBERTa" into "ro"/"bert"). A part mixing scripts ("SE注意力机制") gives its Chinese runs.
    """
    terms: set[str] = set()
    for heading in headings:
        text = _OUTLINE.sub("", prepare_text(heading).strip().lstrip("#").strip())
        text = re.sub(r"\)\s*(?:以及|和|与|及)", ") ", text)  # "训练(train)和推理(inference)"
        for part in _HEADING_PART_SPLIT.split(text):
            part = SPACES.sub(" ", MEMBER_PREFIX.sub("", part.strip())).strip(EDGE_PUNCT + "*#")
            if not part:
                continue
            if HAS_CJK.search(part) and re.search(r"[^\W\d_]", HAS_CJK.sub("", part)):
                # mixed scripts: one piece per run
                pieces = re.findall(f"[{CJK_CHARS}]+|[^{CJK_CHARS}]+", part)
            else:
                pieces = [part]
            for piece in pieces:
                piece = piece.strip(EDGE_PUNCT)
                if not include_latin and not HAS_CJK.search(piece):
                    continue
                if 2 <= len(piece) <= 20 and not DIGITS.match(piece) and normalize(piece) not in STOPWORDS:
                    terms.add(piece)
    return terms
