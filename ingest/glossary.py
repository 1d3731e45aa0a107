"""Alias groups mined from the notes themselves, a user glossary, and BM25 query expansion with them.

The notes are largely a glossary and name their own aliases: "### 张量(tensor)", "LoRA(LOW-RANK ADAPTATION,
低秩适配)", "代价函数(Cost Function)也称损失函数(Loss Function)", "灾难性遗忘（Catastrophic Forgetting）是指…".
Only short heading-like contexts are read (headings, outline term lines, bold lead terms, "X(Y)：" definition
lines, and the subject at the start of each heading's opening sentence), so prose parentheses are not taken
for aliases. Everything here is pattern based: no per-term lists.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.text import STOPWORDS, Tokenizer, normalize, singular
from rag.types import Document

log = logging.getLogger(__name__)

_CJK = r"\u3400-\u9fff"
_HAS_CJK = re.compile(f"[{_CJK}]")
_PURE_CJK = re.compile(f"^[{_CJK}]+$")
_LATIN_WORD = re.compile(f"[^\\W_{_CJK}]+")  # letters/digits of any non-CJK script ("gpt", "3", "β")
_SPACES = re.compile(r"\s+")

# Connectors that introduce another name for the same thing ("X，也称为Y", "X即Y", "X或Y", "(简称 Z)").
_ALIAS_CONN = (
    r"也称为|也称作|也称|又称为|又称作|又称|又叫做|又叫作|又叫|也叫做|也叫作|也叫|简称为|简称|缩写为|缩写"
    r"|或者叫|或叫|全称为|全称是|全称|中文意思是|中文名为|中文名|或者|(?<!立)即(?![使便可时将刻插用])|或(?![许是])"
)
_SPLIT_CONN = r"&|;|/"
_AFTER_PAREN_SPLIT = re.compile(r"^\s*(以及|和|与|及)\s*")  # "训练(train)和推理(inference)": two names
_SEP = re.compile(f"({_ALIAS_CONN}|{_SPLIT_CONN}|,|、|:)")
_ALIAS_CONN_RE = re.compile(f"^(?:{_ALIAS_CONN})$")
_STARTS_WITH_CONN = re.compile(f"^\\s*(?:{_ALIAS_CONN})")
# Connectors strong enough to make "X conn Y" an alias statement without parentheses (not a bare 或).
_STRONG_CONN = re.compile(_ALIAS_CONN.replace("|或者|", "|").replace("|或(?![许是])", ""))
_SPLIT_CONN_RE = re.compile(f"^(?:{_SPLIT_CONN})$")

_MEMBER_PREFIX = re.compile(
    r"^(?:也称为|也称|又称为|又称|也叫做|也叫|又叫做|又叫|简称为|简称|缩写为|缩写|即|or\s+|the\s+|an?\s+)\s*",
    re.IGNORECASE,
)
# "在 Python 库中通常叫作 dtype" -> dtype; "Sequence-to-sequence 的缩写" -> Sequence-to-sequence
_NAMED_AS = re.compile(r"^(.{0,15}?)(?:通常)?(?:叫作|叫做|称为|称作)\s*(.+)$")
_ABBREVIATION_OF = re.compile(r"^(.+?)\s*的(?:首字母)?(?:缩写|简称|简写)$")
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
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_DIGITS = re.compile(r"^[\d\s.,%\-]+$")
_OUTLINE = re.compile(r"^\s*(?:[•·▪◦●\-*+]\s+|\d+(?:\.\d+)*[.)]?\s+|\d+、\s*)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s*(.*?)\s*#*\s*$")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_QUOTES = re.compile(r"[“”「」『』《》]")
_EDGE_PUNCT = " \t,、;:.!?。-–—'\"‘’"
_SENTENCE_END = re.compile(r"[。!?;\n]|\.(?=\s|$)")
_CJK_THEN_LATIN = re.compile(
    f"^([{_CJK}]{{3,}}|[{_CJK}]{{2,}}(?=\\s))\\s*([A-Za-z][A-Za-z0-9 .\\-']*[A-Za-z0-9])$"
)
_TERM_THEN_ACRONYM = re.compile(f"^(.*[{_CJK}].*?)\\s+([A-Z][A-Z0-9\\-]{{1,9}})$")
_FULL_NAME_IS = re.compile(r"^(.{1,20}?)的全称是\s*(.+)$")  # "WOE的全称是“Weight of Evidence”"
_IS_ABBREVIATION_OF = re.compile(r"^(?:(.{1,20}?)\s*)?是\s*(.+?)\s*的(?:首字母)?(?:缩写|简称|简写)$")
_HEADING_PART_SPLIT = re.compile(
    rf"[()\[\]{{}}<>【】“”\"‘’'「」『』《》,、;:。!?|/\\&+]|{_ALIAS_CONN}|{_SPLIT_CONN}"
)
_DEFINITION_LINE = re.compile(r"^\s*[^()\s:][^():]{0,30}\([^()]{1,80}\)\s*:")

MAX_MEMBER_CHARS = 40  # with Chinese characters
MAX_LATIN_MEMBER_CHARS = 72  # English expansions are longer: "BigScience Large Open-science Open-access ..."
MAX_LATIN_WORDS = 8  # expansions run to 7: "Universal Language Model Fine-tuning for Text Classification"
MAX_CJK_CHARS = 16
MAX_STRICT_CJK_CHARS = 12


# ----------------------------------------------------------------------------------------------- members


def clean_member(text: str) -> str:
    """A member as displayed: NFKC width folding, markdown and quotes removed, spaces collapsed, edges trimmed."""
    text = unicodedata.normalize("NFKC", text)
    text = _LINK.sub(r"\1", _IMAGE.sub(" ", text))
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = _QUOTES.sub("", text)
    text = _SPACES.sub(" ", text).strip(_EDGE_PUNCT)
    return text.strip()


def member_key(text: str) -> str:
    """Identity of a member: lowercased, width-folded, without spaces, '-', '_', '.' or '·' ("GPT-3" == "gpt3")."""
    return re.sub(r"[\s\-_.·]+", "", normalize(clean_member(text)))


def _latin_key(text: str) -> str:
    """The letters and digits of a CJK-free member, lowercased and joined: 'Low-Rank Adaptation' -> 'lowrankadaptation'."""
    return "".join(_LATIN_WORD.findall(normalize(text)))


def _singular_latin_key(text: str) -> str:
    """`_latin_key` with the last word in the singular: 'Deep Neural Networks' -> 'deepneuralnetwork'."""
    words = _LATIN_WORD.findall(normalize(text))
    return "".join([*words[:-1], singular(words[-1])]) if words else ""


def _member_status(member: str, strict: bool) -> str:
    """'ok' for a usable alias, 'drop' for one too trivial to keep (single letter, number), 'bad' for non-alias text."""
    if not member or _DIGITS.match(member):
        return "drop"
    if len(member) == 1 and not _HAS_CJK.search(member):
        return "drop"
    if normalize(member) in STOPWORDS:
        return "drop"
    if (
        len(member) > (MAX_MEMBER_CHARS if _HAS_CJK.search(member) else MAX_LATIN_MEMBER_CHARS)
        or _SENTENCE_PUNCT.search(member)
        or _CODE_CHARS.search(member)
        or _URL.search(member)
        or "_" in member
        or _DOTTED_IDENT.match(member)
        or "(" in member
        or ")" in member
    ):
        return "bad"
    if len(member.split()) > MAX_LATIN_WORDS or _LATIN_FUNCTION_START.match(member):
        return "bad"
    cjk_chars = len(_HAS_CJK.findall(member))
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
    if match and _latin_key(match.group(2)) not in set(_LATIN_WORD.findall(normalize(context))):
        return [match.group(1).strip(), match.group(2).strip()]
    return [term]


# ----------------------------------------------------------------------------------------------- parsing


@dataclass
class _Segment:
    """One name in a heading-like string: its text, the parentheses after it, extra space-separated names."""

    term: str = ""
    parens: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    after_paren: bool = False

    def empty(self) -> bool:
        return not self.term.strip() and not self.parens and not self.extras


def _scan(text: str) -> list[tuple[str, str]]:
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


def _prepare(text: str) -> str:
    """NFKC (full-width brackets and commas become ASCII), links reduced to their text, URLs removed."""
    text = unicodedata.normalize("NFKC", text)
    text = _LINK.sub(r"\1", _IMAGE.sub(" ", text))
    text = _URL.sub(" ", text)
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
    if _CODE_CHARS.search(content) or _SENTENCE_PUNCT.search(content) or _URL.search(content):
        return [], []
    if re.search(r"等\s*$|\betc\b", content):
        return [], []  # "(FP32 或 FP16 等)": examples, not names
    single_letters = all(len(run) == 1 for run in re.findall(r"[^\W\d_]+", content))
    if (
        single_letters
        and not _HAS_CJK.search(content)
        and (len(content) == 1 or re.search(r"[-/,]", content))
    ):
        return [], []  # "(x)", "(t-1)", "(i, j)": a formula
    pieces = [p for p in re.split(r"[,、/]|或者|或(?![许是])|\s+or\s+", content) if p.strip()]
    if len(pieces) >= 2 and all(re.fullmatch(r"\s*[a-z][a-z0-9]*\s*", p) for p in pieces):
        return [], []  # "(samples, features)", "(a,b)": an argument list
    members: list[str] = []
    for raw in pieces:
        piece = clean_member(raw)
        if _DIGITS.match(piece):
            return [], []  # "(5,)", "(0.4, 0.6)": a tuple
        if _EXAMPLE_START.match(piece) or _ANNOTATION.match(piece):
            continue
        named = _NAMED_AS.match(piece)
        if named:
            piece = named.group(2)
        abbreviation = _ABBREVIATION_OF.match(piece)
        if abbreviation:
            piece = abbreviation.group(1)
        previous = None
        while previous != piece:
            previous, piece = piece, clean_member(_MEMBER_PREFIX.sub("", piece))
        if _EXPLANATION_START.match(piece) or (_HAS_CJK.search(piece) and _EXPLANATION_CHARS.search(piece)):
            return [], []  # "(0 轴,因为索引从 0 开始)", "(这是最常叫法)"
        status = _member_status(piece, strict=False)
        if status == "bad":
            return [], []
        if status == "ok":
            members.append(piece)
    return members, []


def _term_members(term: str, strict: bool, context: str = "") -> list[str] | None:
    """Names in the text of a segment; None when it is not a name (only rejected outright in strict mode)."""
    term = clean_member(term)
    if not term:
        return []
    previous = None
    while previous != term:
        previous, term = term, clean_member(_MEMBER_PREFIX.sub("", term))
    out: list[str] = []
    for part in [term] if strict else _split_term(term, context):  # glued names only in headings
        status = _member_status(part, strict)
        if status == "bad":
            return None
        if status == "ok":
            out.append(part)
    return out


def _segments(text: str) -> list[tuple[_Segment, list[str]]]:
    """Segments of a heading-like string, each with the separators before it."""
    result: list[tuple[_Segment, list[str]]] = []
    pending: list[str] = []
    current = _Segment()

    def finish(sep: str) -> None:
        nonlocal current, pending
        if current.empty():
            pending.append(sep)
        else:
            result.append((current, pending))
            pending = [sep]
        current = _Segment()

    for kind, value in _scan(text):
        if kind == "paren":
            current.parens.append(value)
            current.after_paren = True
            continue
        for i, chunk in enumerate(_SEP.split(value)):
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


def _attach_suffix(segment: _Segment, chunk: str) -> None:
    """Text right after a parenthesis: "准(正)确率" reads as 准确率, "ECA(...) 高效通道注意力" adds a name,
    "Detection error tradeoff (DET) curve" continues the Latin name; anything else ("(MoE)模型") is dropped."""
    suffix = chunk.strip()
    spaced = chunk[:1].isspace()
    last = segment.parens[-1].strip() if segment.parens else ""
    if not spaced and len(last) == 1:
        segment.parens.pop()
        segment.term = segment.term.rstrip() + suffix
        segment.after_paren = bool(segment.parens)
    elif spaced and _PURE_CJK.match(suffix):
        segment.extras.append(suffix)
    elif spaced and segment.term.strip() and not _HAS_CJK.search(segment.term + suffix):
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
    segments = _segments(_prepare(text))
    if not segments:
        return []
    has_conn = any(_ALIAS_CONN_RE.match(sep) for _, seps in segments for sep in seps)
    runs: list[list[_Segment]] = []
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
            names = _term_members(segment.term, strict, " ".join(segment.parens))
            rejected = rejected or names is None
            members.extend(names or [])
            for extra in segment.extras:
                if _member_status(clean_member(extra), strict=True) == "ok":
                    members.append(clean_member(extra))
            for paren in segment.parens:
                inside, nested = _paren_members(paren, strict)
                members.extend(inside)
                groups.extend(nested)
        if rejected and strict:
            continue
        group = _dedupe(members)
        if len(group) >= 2 and _plausible(group):
            groups.append(group)
    return groups


def _plausible(group: list[str]) -> bool:
    """Chinese synonyms given side by side share a character ("代价函数/损失函数", "感知机/感知器"); an
    all-Chinese pair that shares none is a remark ("机器学习十大常见算法（唐宇迪）", "扩散(加噪声)")."""
    if any(re.search(r"[A-Za-z]", member) for member in group):
        return True
    chars = [set(_HAS_CJK.findall(member)) for member in group]
    return all(any(mine & other for j, other in enumerate(chars) if j != i) for i, mine in enumerate(chars))


def _joins(
    seps: list[str], segments: list[tuple[_Segment, list[str]]], index: int, has_conn: bool, join_all: bool
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


def _dedupe(members: Iterable[str]) -> list[str]:
    """Members in first-seen order, one per `member_key`."""
    seen: set[str] = set()
    out: list[str] = []
    for member in members:
        key = member_key(member)
        if key and key not in seen:
            seen.add(key)
            out.append(member)
    return out


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
    return bool(text) and not re.search(r"[,、]", text) and _member_status(text, strict=True) == "ok"


def _head_with_parens(clause: str) -> tuple[str, bool] | None:
    """For a clause "X(Y)rest": the part to keep ("" when X is not a name) and whether more clauses may follow.

    None when the clause does not start with a name followed by a parenthesis.
    """
    items = _scan(clause)
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
    if rest[:1].isspace() and _PURE_CJK.match(rest.strip()) and len(rest.strip()) <= MAX_STRICT_CJK_CHARS:
        return kept + rest, False  # "Quantization Aware Training (QAT) 量化感知训练"
    return kept, False


def _opening_term_string(line: str, heading_term: str | None) -> str | None:
    """The alias-bearing head of an opening sentence or term line, as a term string, or None.

    Keeps the subject ("X(Y)", "X也叫Y", "X的全称是Y", "X是Y的缩写", or with the heading's name as X:
    "又称Y", "是Y的简称") and the clauses right after it that start with an alias connector ("，又称Z")
    or, after a Chinese subject, give its English name ("弱分类器，weak classifier"); stops at the first
    other clause.
    """
    sentence = _first_sentence(_prepare(line)).strip()
    clauses = _split_clauses(sentence)
    if not clauses:
        return None
    if len(clauses) > 1 and not _STARTS_WITH_CONN.sub("", clauses[0]).strip():
        clauses = [clauses[0] + clauses[1], *clauses[2:]]  # "又称，乱序语言模型"
    first = clauses[0].strip()
    can_continue = True
    full_name = _FULL_NAME_IS.match(first)
    abbreviation = _IS_ABBREVIATION_OF.match(first) or _ABBREVIATION_OF.match(first)
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
    elif _is_term_like(first) and not _SEP.search(first):
        head = first  # a bare subject; only an alias clause after it can make a group
    else:
        return None
    accepted = [head]
    subject_is_cjk = bool(_PURE_CJK.match(clean_member(first)))
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
    segments = _segments(body)
    return bool(segments) and all(
        _term_members(segment.term, strict=True) is not None for segment, _ in segments
    )


def _is_english_gloss(text: str) -> bool:
    """A bare English name such as "weak classifier" or "sampling with replacement"."""
    text = clean_member(text)
    return (
        bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9' \-]*", text))
        and len(text) >= 3
        and _member_status(text, True) == "ok"
    )


def _heading_primary_term(heading: str) -> str | None:
    """The first name of a heading ("排列语言模型" of "排列语言模型(Permutation Language Model, PLM)")."""
    segments = _segments(_prepare(heading))
    if not segments:
        return None
    names = _term_members(segments[0][0].term, strict=False)
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
    cjk = {a[i : i + 2] for i in range(len(a) - 1) if _PURE_CJK.match(a[i : i + 2])}
    if any(pair in b for pair in cjk):
        return True
    words = {w for w in _LATIN_WORD.findall(a) if len(w) >= 2 and w not in STOPWORDS}
    return bool(words & set(_LATIN_WORD.findall(b)))


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
        probe = _URL.sub("", _IMAGE.sub("", line)).strip()
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


# ------------------------------------------------------------------------------------ user glossary, merge


def load_user_glossary(path: Path) -> list[list[str]]:
    """Groups from a user's glossary file: one group per line, members separated by , ， | = or tabs.

    Blank lines, lines starting with '#' and " # …" line ends are skipped; a line with fewer than two
    distinct members is ignored with a warning. A missing file yields no groups (with a warning).
    """
    if not path.is_file():
        log.warning("glossary %s not found; no user aliases", path)
        return []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030", errors="replace")
    groups: list[list[str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = re.sub(r"\s#.*$", "", line).strip()
        if not line or line.startswith("#"):
            continue
        members = _dedupe(m for m in (clean_member(p) for p in re.split(r"[,，|=\t]", line)) if m)
        if len(members) < 2:
            log.warning("glossary %s line %d ignored: needs at least two distinct names", path, number)
            continue
        groups.append(members)
    return groups


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
    spelled_out = {key for key in parent if key not in acronyms and not _HAS_CJK.search(display[key])}
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
        text = _OUTLINE.sub("", _prepare(heading).strip().lstrip("#").strip())
        text = re.sub(r"\)\s*(?:以及|和|与|及)", ") ", text)  # "训练(train)和推理(inference)"
        for part in _HEADING_PART_SPLIT.split(text):
            part = _SPACES.sub(" ", _MEMBER_PREFIX.sub("", part.strip())).strip(_EDGE_PUNCT + "*#")
            if not part:
                continue
            if _HAS_CJK.search(part) and re.search(r"[^\W\d_]", _HAS_CJK.sub("", part)):
                pieces = re.findall(f"[{_CJK}]+|[^{_CJK}]+", part)  # mixed scripts: one piece per run
            else:
                pieces = [part]
            for piece in pieces:
                piece = piece.strip(_EDGE_PUNCT)
                if not include_latin and not _HAS_CJK.search(piece):
                    continue
                if 2 <= len(piece) <= 20 and not _DIGITS.match(piece) and normalize(piece) not in STOPWORDS:
                    terms.add(piece)
    return terms


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
        self._latin: dict[str, list[_Member]] = {}  # by _latin_key
        self._other: dict[str, list[_Member]] = {}  # by member_key
        for index, group in enumerate(self.groups):
            for text in group:
                latin = not _HAS_CJK.search(text)
                key = _latin_key(text) if latin else member_key(text)
                if (
                    len(key) < 2
                    or key.isdigit()
                    or normalize(text) in STOPWORDS
                    or member_key(text) in ignored
                ):
                    continue
                (self._latin if latin else self._other).setdefault(key, []).append(_Member(index, text))
                if latin and (plain := _singular_latin_key(text)) != key and len(plain) >= 2:
                    # "RNNs" in a question finds "RNN", "language model" finds "Language Models"
                    self._latin.setdefault(plain, []).append(_Member(index, text))
        self._longest_latin = max((len(key) for key in self._latin), default=0)

    def __len__(self) -> int:
        return len(self.groups)

    def _matches(self, tokens: Sequence[str], query_text: str) -> list[_Match]:
        """Names found in the query, minus those inside a longer match of another group, in query order."""
        norm = normalize(query_text)
        compact = _SPACES.sub("", norm)
        offset = [0] * (len(norm) + 1)  # position in `compact` of each position in `norm`
        for i, ch in enumerate(norm):
            offset[i + 1] = offset[i] + (0 if ch.isspace() else 1)
        found: list[_Match] = []
        words = [(m.group(), m.start(), m.end()) for m in _LATIN_WORD.finditer(norm)]
        for i in range(len(words)):
            joined = ""
            for j in range(i, len(words)):
                if j > i and not re.fullmatch(r"[\s\-_./·]*", norm[words[j - 1][2] : words[j][1]]):
                    break  # only separators may stand between the words of one name
                joined += words[j][0]
                if len(joined) > self._longest_latin:
                    break
                plain = joined[: len(joined) - len(words[j][0])] + singular(words[j][0])
                keys = (joined,) if plain == joined else (joined, plain)
                members = dict.fromkeys(m for key in keys for m in self._latin.get(key, ()))
                for member in members:
                    found.append(_Match(offset[words[i][1]], offset[words[j][2]], member))
        for key, members in self._other.items():
            start = compact.find(key)
            while start >= 0:
                if _latin_boundary(compact, start, start + len(key)):
                    found.extend(_Match(start, start + len(key), member) for member in members)
                start = compact.find(key, start + 1)
        for token in tokens:  # tokens that do not come from the query text (a rewritten question, say)
            key = _SPACES.sub("", normalize(token))
            if key and key not in compact:
                for member in self._latin.get(_latin_key(key), []) + self._other.get(member_key(key), []):
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


def _latin_boundary(text: str, start: int, end: int) -> bool:
    """A match of a CJK or mixed member must not cut a Latin word at its Latin edges."""

    def latin(ch: str) -> bool:
        return bool(_LATIN_WORD.fullmatch(ch))

    if start > 0 and latin(text[start]) and latin(text[start - 1]):
        return False
    return not (end < len(text) and latin(text[end - 1]) and latin(text[end]))
