"""Alias groups named by one heading-like string: `parse_term_string` and the patterns it reads.

"梯度弥散(梯度消失)（vanishing gradient problem）", "代价函数(Cost Function)也称损失函数(Loss Function)",
"训练(train)和推理(inference)": a name, the names in its parentheses and those after an alias connector
(也称, 又称, 即, 或, 简称…) form a group; code, formulas, tuples, examples and explanations inside parentheses
are not names. Which lines of a note are read, and how, is `ingest/glossary.py`'s job; the helpers and
patterns it shares (`prepare_text`, `split_segments`, `member_status`, `ALIAS_CONN`...) come from here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from rag.aliases import LATIN_WORD, MARKDOWN_IMAGE, MARKDOWN_LINK, clean_member, latin_key, member_key
from rag.text import CJK_CHARS, HAS_CJK, STOPWORDS, normalize

PURE_CJK = re.compile(f"^[{CJK_CHARS}]+$")

# Connectors that introduce another name for the same thing ("X，也称为Y", "X即Y", "X或Y", "(简称 Z)").
ALIAS_CONN = (
    r"也称为|也称作|也称|又称为|又称作|又称|又叫做|又叫作|又叫|也叫做|也叫作|也叫|简称为|简称|缩写为|缩写"
    r"|或者叫|或叫|全称为|全称是|全称|中文意思是|中文名为|中文名|或者|(?<!立)即(?![使便可时将刻插用])|或(?![许是])"
)
SPLIT_CONN = r"&|;|/"
_AFTER_PAREN_SPLIT = re.compile(r"^\s*(以及|和|与|及)\s*")  # "训练(train)和推理(inference)": two names
SEPARATOR = re.compile(f"({ALIAS_CONN}|{SPLIT_CONN}|,|、|:)")
_ALIAS_CONN_RE = re.compile(f"^(?:{ALIAS_CONN})$")
_SPLIT_CONN_RE = re.compile(f"^(?:{SPLIT_CONN})$")

MEMBER_PREFIX = re.compile(
    r"^(?:也称为|也称|又称为|又称|也叫做|也叫|又叫做|又叫|简称为|简称|缩写为|缩写|即|or\s+|the\s+|an?\s+)\s*",
    re.IGNORECASE,
)
# "在 Python 库中通常叫作 dtype" -> dtype; "Sequence-to-sequence 的缩写" -> Sequence-to-sequence
_NAMED_AS = re.compile(r"^(.{0,15}?)(?:通常)?(?:叫作|叫做|称为|称作)\s*(.+)$")
ABBREVIATION_OF = re.compile(r"^(.+?)\s*的(?:首字母)?(?:缩写|简称|简写)$")
_EXAMPLE_START = re.compile(r"^(?:比如|例如|譬如|如)|^(?:e\.g\.|eg\.|such as|like)\b", re.IGNORECASE)
_ANNOTATION = re.compile(r"^(?:中文|英文|英语|汉语|english|chinese|译|注|可选|optional)$", re.IGNORECASE)
_EXPLANATION_START = re.compile(
    r"^(?:因为|由于|所以|但是|但|不要|注意|其中|也就是|就是|这|那|是|指|如果|虽然|通常|一般|可以|用于|表示)"
)
_EXPLANATION_CHARS = re.compile(r"[的是这那了吗呢和与]")
# Words that mark prose rather than a name, for subjects of sentences and term lines ("strict" mode).
_STRICT_BAD = re.compile(
    r"[的是将把这那]|一个|一种|一些|使用|采用|通过|利用|进行|涉及|用于|可以|能够|叫作|叫做|称为|称之为|需要|分为|属于"
    r"|包括|包含|发现|仅|我们|[\u3400-\u9fff]\s|\s[\u3400-\u9fff]"
)
_STRICT_START = re.compile(r"^(?:当|如果|用|在|对于|由于|因为|每|各|给定|假设|针对|根据|其)")
_LATIN_FUNCTION_START = re.compile(
    r"^(?:with|without|for|from|of|in|on|to|by|not|see|including|except|via|which|that|is|are|this|it)\b",
    re.IGNORECASE,
)
_CODE_CHARS = re.compile(r"[=\[\]{}<>*^$\\`|~+→#@%]")
_SENTENCE_PUNCT = re.compile(r"[。;:!?；：！？]")
_DOTTED_IDENT = re.compile(r"^[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+(?:\(\))?$")
URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
DIGITS = re.compile(r"^[\d\s.,%\-]+$")
_CJK_THEN_LATIN = re.compile(
    f"^([{CJK_CHARS}]{{3,}}|[{CJK_CHARS}]{{2,}}(?=\\s))\\s*([A-Za-z][A-Za-z0-9 .\\-']*[A-Za-z0-9])$"
)
_TERM_THEN_ACRONYM = re.compile(f"^(.*[{CJK_CHARS}].*?)\\s+([A-Z][A-Z0-9\\-]{{1,9}})$")

MAX_MEMBER_CHARS = 40  # with Chinese characters
MAX_LATIN_MEMBER_CHARS = 72  # English expansions are longer: "BigScience Large Open-science Open-access ..."
MAX_LATIN_WORDS = 8  # expansions run to 7: "Universal Language Model Fine-tuning for Text Classification"
MAX_CJK_CHARS = 16
MAX_STRICT_CJK_CHARS = 12


# ------------------------------------------------------------------------------------------- member checks


def member_status(member: str, strict: bool) -> str:
    """'ok' for a usable alias, 'drop' for one too trivial to keep (single letter, number), 'bad' for non-alias text."""
    if not member or DIGITS.match(member):
        return "drop"
    if len(member) == 1 and not HAS_CJK.search(member):
        return "drop"
    if normalize(member) in STOPWORDS:
        return "drop"
    if (
        len(member) > (MAX_MEMBER_CHARS if HAS_CJK.search(member) else MAX_LATIN_MEMBER_CHARS)
        or _SENTENCE_PUNCT.search(member)
        or _CODE_CHARS.search(member)
        or URL.search(member)
        or "_" in member
        or _DOTTED_IDENT.match(member)
        or "(" in member
        or ")" in member
    ):
        return "bad"
    if len(member.split()) > MAX_LATIN_WORDS or _LATIN_FUNCTION_START.match(member):
        return "bad"
    cjk_chars = len(HAS_CJK.findall(member))
    if cjk_chars > (MAX_STRICT_CJK_CHARS if strict else MAX_CJK_CHARS):
        return "bad"
    if strict and (_STRICT_BAD.search(member) or _STRICT_START.match(member)):
        return "bad"
    return "ok"


def _split_term(term: str, context: str = "") -> list[str]:
    """A term outside parentheses, split where it glues two names: "召回率recall", "LSH算法 LSH".

    Not split when the Latin tail is a word of the parentheses that follow (`context`), as in
    "放缩点积attention(scaled dot-Product attention)": there the tail belongs to the name.
    """
    match = _TERM_THEN_ACRONYM.match(term) or _CJK_THEN_LATIN.match(term)
    if match and latin_key(match.group(2)) not in set(LATIN_WORD.findall(normalize(context))):
        return [match.group(1).strip(), match.group(2).strip()]
    return [term]


# ----------------------------------------------------------------------------------------------- parsing


@dataclass
class Segment:
    """One name in a heading-like string: its text, the parentheses after it, extra space-separated names."""

    term: str = ""
    parens: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    after_paren: bool = False

    def empty(self) -> bool:
        return not self.term.strip() and not self.parens and not self.extras


def split_parens(text: str) -> list[tuple[str, str]]:
    """Split into ("text", ...) and ("paren", inner) items at top-level parentheses; stray closers are dropped."""
    items: list[tuple[str, str]] = []
    buf: list[str] = []
    inner: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            if depth == 0:
                if buf:
                    items.append(("text", "".join(buf)))
                    buf = []
                inner = []
            else:
                inner.append(ch)
            depth += 1
        elif ch == ")":
            if depth == 0:
                continue
            depth -= 1
            if depth == 0:
                items.append(("paren", "".join(inner)))
            else:
                inner.append(ch)
        elif depth:
            inner.append(ch)
        else:
            buf.append(ch)
    if buf:
        items.append(("text", "".join(buf)))
    return items  # an unclosed parenthesis is dropped with its content


def prepare_text(text: str) -> str:
    """NFKC (full-width brackets and commas become ASCII), links reduced to their text, URLs removed."""
    text = unicodedata.normalize("NFKC", text)
    text = MARKDOWN_LINK.sub(r"\1", MARKDOWN_IMAGE.sub(" ", text))
    text = URL.sub(" ", text)
    return text.replace("**", "").replace("__", "").replace("`", "")


def _paren_members(content: str, strict: bool) -> tuple[list[str], list[list[str]]]:
    """Aliases inside one parenthesis, or none when it holds code, a formula, a tuple or an explanation.

    A parenthesis that itself holds parentheses is parsed as a term string of its own; its groups are
    returned separately instead of joining the outer name.
    """
    content = content.strip()
    if not content:
        return [], []
    if "(" in content:
        return [], parse_term_string(content, strict=strict)
    if _CODE_CHARS.search(content) or _SENTENCE_PUNCT.search(content) or URL.search(content):
        return [], []
    if re.search(r"等\s*$|\betc\b", content):
        return [], []  # "(FP32 或 FP16 等)": examples, not names
    single_letters = all(len(run) == 1 for run in re.findall(r"[^\W\d_]+", content))
    if single_letters and not HAS_CJK.search(content) and (len(content) == 1 or re.search(r"[-/,]", content)):
        return [], []  # "(x)", "(t-1)", "(i, j)": a formula
    pieces = [p for p in re.split(r"[,、/]|或者|或(?![许是])|\s+or\s+", content) if p.strip()]
    if len(pieces) >= 2 and all(re.fullmatch(r"\s*[a-z][a-z0-9]*\s*", p) for p in pieces):
        return [], []  # "(samples, features)", "(a,b)": an argument list
    members: list[str] = []
    for raw in pieces:
        piece = clean_member(raw)
        if DIGITS.match(piece):
            return [], []  # "(5,)", "(0.4, 0.6)": a tuple
        if _EXAMPLE_START.match(piece) or _ANNOTATION.match(piece):
            continue
        named = _NAMED_AS.match(piece)
        if named:
            piece = named.group(2)
        abbreviation = ABBREVIATION_OF.match(piece)
        if abbreviation:
            piece = abbreviation.group(1)
        previous = None
        while previous != piece:
            previous, piece = piece, clean_member(MEMBER_PREFIX.sub("", piece))
        if _EXPLANATION_START.match(piece) or (HAS_CJK.search(piece) and _EXPLANATION_CHARS.search(piece)):
            return [], []  # "(0 轴,因为索引从 0 开始)", "(这是最常叫法)"
        status = member_status(piece, strict=False)
        if status == "bad":
            return [], []
        if status == "ok":
            members.append(piece)
    return members, []


def term_members(term: str, strict: bool, context: str = "") -> list[str] | None:
    """Names in the text of a segment; None when it is not a name (only rejected outright in strict mode)."""
    term = clean_member(term)
    if not term:
        return []
    previous = None
    while previous != term:
        previous, term = term, clean_member(MEMBER_PREFIX.sub("", term))
    out: list[str] = []
    for part in [term] if strict else _split_term(term, context):  # glued names only in headings
        status = member_status(part, strict)
        if status == "bad":
            return None
        if status == "ok":
            out.append(part)
    return out


def split_segments(text: str) -> list[tuple[Segment, list[str]]]:
    """Segments of a heading-like string, each with the separators before it."""
    result: list[tuple[Segment, list[str]]] = []
    pending: list[str] = []
    current = Segment()

    def finish(sep: str) -> None:
        nonlocal current, pending
        if current.empty():
            pending.append(sep)
        else:
            result.append((current, pending))
            pending = [sep]
        current = Segment()

    for kind, value in split_parens(text):
        if kind == "paren":
            current.parens.append(value)
            current.after_paren = True
            continue
        for i, chunk in enumerate(SEPARATOR.split(value)):
            if i % 2 == 1:
                finish(chunk)
                continue
            if not chunk.strip():
                continue
            if current.after_paren:
                conjunction = _AFTER_PAREN_SPLIT.match(chunk)
                if conjunction:
                    finish(conjunction.group(1))
                    chunk = chunk[conjunction.end() :]
                else:
                    _attach_suffix(current, chunk)
                    continue
            current.term += chunk
    if not current.empty():
        result.append((current, pending))
    return result


def _attach_suffix(segment: Segment, chunk: str) -> None:
    """Text right after a parenthesis: "准(正)确率" reads as 准确率, "ECA(...) 高效通道注意力" adds a name,
    "Detection error tradeoff (DET) curve" continues the Latin name; anything else ("(MoE)模型") is dropped."""
    suffix = chunk.strip()
    spaced = chunk[:1].isspace()
    last = segment.parens[-1].strip() if segment.parens else ""
    if not spaced and len(last) == 1:
        segment.parens.pop()
        segment.term = segment.term.rstrip() + suffix
        segment.after_paren = bool(segment.parens)
    elif spaced and PURE_CJK.match(suffix):
        segment.extras.append(suffix)
    elif spaced and segment.term.strip() and not HAS_CJK.search(segment.term + suffix):
        segment.term = segment.term.rstrip() + " " + suffix


def parse_term_string(text: str, *, strict: bool = False, join_all: bool = False) -> list[list[str]]:
    """Alias groups named by one heading-like string.

    "梯度弥散(梯度消失)（vanishing gradient problem）" -> [["梯度弥散", "梯度消失", "vanishing gradient problem"]];
    "训练(train)和推理(inference)" -> two groups. Names joined by 也称/又称/即/或/简称… or inside one parenthesis
    belong together; &/；// and 和/与 after a parenthesis separate; "，" joins two names (or any when a
    connector is present), "、" joins only when a connector is present, ":" only as "X(Y)：Z". `strict`
    (opening sentences, term lines) also rejects names that read like prose and drops a whole group when
    one of its names does; `join_all` joins across every comma and colon (the caller has already cut the
    text to its alias clauses).
    """
    segments = split_segments(prepare_text(text))
    if not segments:
        return []
    has_conn = any(_ALIAS_CONN_RE.match(sep) for _, seps in segments for sep in seps)
    runs: list[list[Segment]] = []
    for index, (segment, seps) in enumerate(segments):
        if index == 0 or not _joins(seps, segments, index, has_conn, join_all):
            runs.append([segment])
        else:
            runs[-1].append(segment)
    groups: list[list[str]] = []
    for run in runs:
        members: list[str] = []
        rejected = False
        for segment in run:
            names = term_members(segment.term, strict, " ".join(segment.parens))
            rejected = rejected or names is None
            members.extend(names or [])
            for extra in segment.extras:
                if member_status(clean_member(extra), strict=True) == "ok":
                    members.append(clean_member(extra))
            for paren in segment.parens:
                inside, nested = _paren_members(paren, strict)
                members.extend(inside)
                groups.extend(nested)
        if rejected and strict:
            continue
        group = dedupe_members(members)
        if len(group) >= 2 and _plausible(group):
            groups.append(group)
    return groups


def _plausible(group: list[str]) -> bool:
    """Chinese synonyms given side by side share a character ("代价函数/损失函数", "感知机/感知器"); an
    all-Chinese pair that shares none is a remark ("机器学习十大常见算法（唐宇迪）", "扩散(加噪声)")."""
    if any(re.search(r"[A-Za-z]", member) for member in group):
        return True
    chars = [set(HAS_CJK.findall(member)) for member in group]
    return all(any(mine & other for j, other in enumerate(chars) if j != i) for i, mine in enumerate(chars))


def _joins(
    seps: list[str], segments: list[tuple[Segment, list[str]]], index: int, has_conn: bool, join_all: bool
) -> bool:
    """Whether the segment at `index` names the same thing as the one before it."""
    if any(_ALIAS_CONN_RE.match(sep) for sep in seps):
        return True
    if any(_SPLIT_CONN_RE.match(sep) or _AFTER_PAREN_SPLIT.fullmatch(sep) for sep in seps):
        return False
    if "," in seps:
        return join_all or has_conn or len(segments) == 2
    if "、" in seps:
        return has_conn
    if ":" in seps:
        left = segments[index - 1][0]
        return join_all or (bool(left.parens) and index == len(segments) - 1)
    return True


def dedupe_members(members: Iterable[str]) -> list[str]:
    """Members in first-seen order, one per `member_key`."""
    seen: set[str] = set()
    out: list[str] = []
    for member in members:
        key = member_key(member)
        if key and key not in seen:
            seen.add(key)
            out.append(member)
    return out
