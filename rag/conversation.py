"""Follow-up questions without an LLM: make "那它有什么缺点？" standalone using the conversation history.

`resolve_followup` is the heuristic that stands in when there is no LLM, or when its rewrite
(`rag.question_rewrite`) fails or is unusable: the subject of the previous user question (its main entity)
replaces the follow-up's references, takes X's place in an ellipsis ("那 X 呢？"), or is prepended.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from rag.text import CJK_CHARS, Tokenizer, is_cjk, normalize
from rag.types import Turn


def _word_set(text: str) -> frozenset[str]:
    """Whitespace-separated words of a multi-line literal."""
    return frozenset(text.split())


# Pronouns / demonstratives that point back into the conversation. "该" is skipped after 应/活 ("应该"),
# "其" inside common words (其他, 其中, 尤其, 其实...) does not count.
_ZH_REFERENCE = re.compile(
    r"它们?|这么做|这样做|那样做|这么|这个|那个|这种|那种|这些|那些|这类|那类|这样|那样|这两|上述|前者|后者"
    r"|(?<![因如彼从])此(?![外])|(?<![应活])该(?![怎如不])|(?<![尤极])其(?![他它中实余次后])"
)
# References that stand for the subject itself, so the subject can take their place ("这两", "前者" cannot).
_ZH_SUBSTITUTABLE = re.compile(
    r"它们?|这么做|这样做|那样做|这么|这个|那个|这种|那种|这类|那类|这样|那样"
    r"|(?<![因如彼从])此(?![外])|(?<![应活])该(?![怎如不])|(?<![尤极])其(?![他它中实余次后])"
)
_EN_REFERENCE = re.compile(r"\b(?:it|its|this|that|they|them|their|these|those|one)\b", re.I)
# English pronouns that (nearly) always point back; "it" before an adjective of judgement is a dummy subject.
_EN_PRONOUN = re.compile(
    r"\b(?:it(?!\s+(?:is\s+|'s\s+)?(?:possible|necessary|true|better|worth|ok|okay|important|hard|easy)\b)"
    r"|its|they|them|their)\b",
    re.I,
)
_EN_DEMONSTRATIVE = re.compile(r"\b(?:this|that|these|those)\b(?=\s*(?:[?.!,]|$))", re.I)
# A name-like token before an English pronoun is its antecedent: inner capitals or digits (BiLSTM, GPT3), a
# capitalized word after the first one (not "I"), or Chinese.
_EN_NAME = re.compile(rf"\b[A-Za-z]+[A-Z0-9][A-Za-z0-9]*\b|(?<=\s)(?!I\b)[A-Z][a-z]+\b|[{CJK_CHARS}]")
_CONTINUATION_START = re.compile(
    r"^\s*(?:那么|那|还有|另外|然后呢|接着|and\b|also\b|what about\b|how about\b|and what about\b|then\b)",
    re.I,
)
_LEADING_THEN = re.compile(r"^\s*(?:那么|那(?![个种样些类么])|还有|另外)\s*")
# Ellipsis: "那 X 呢？" / "what about X?" asks the previous question again about X.
# Both are matched whole against the question without its final marks (`_END_MARKS`).
_ZH_ELLIPSIS = re.compile(r"(?:那么|那|还有)?(?P<x>[^，,。；;？?！!]+)呢")
_EN_ELLIPSIS = re.compile(
    r"(?:and\s+)?(?:what|how)\s+about\s+(?P<x>[^?.!]+)|and\s+(?P<y>(?:the\s+)?[\w.+#-]+(?:\s+[\w.+#-]+){0,2})", re.I
)
_END_MARKS = " \t\r\n?？。.!！"
# Longer questions are not parsed for a subject or an ellipsis (their key terms stand in): the patterns stay
# cheap whatever the input, and a long question is rarely a follow-up.
_MAX_PARSE_CHARS = 200
_QUESTION_WORD = re.compile(r"什么|怎么|怎样|为什么|为何|为啥|哪|吗|如何|多少|几|啥|\b(?:why|how|what|which|when|where|who)\b", re.I)
# A successor of the subject: "它的第二版", "其改进版", "its second version", "the v2".
_NUMBERS = {"二": 2, "三": 3, "四": 4, "五": 5, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4}
_ZH_SUCCESSOR = re.compile(
    r"(?P<ref>(?:它们?|其|这个|该)的?)?"
    r"(?P<what>第(?P<n>[二三四五2-5])[个]?(?:版本?|代)|(?P<n2>[二三四五2-5])代|新版本?|新一代|下一代|后续版本"
    r"|改进版本?|改良版本?|升级版本?|增强版|变体|变种|(?<![A-Za-z0-9])[vV](?P<n3>[2-5])(?![\d.]))"
)
_EN_SUCCESSOR = re.compile(
    r"(?P<ref>\b(?:its|their|the|this|that)\s+)?"
    r"(?P<what>\b(?:(?P<n>second|third|fourth|2nd|3rd|4th)\s+(?:version|generation|edition)"
    r"|(?:next|new|newer|improved|updated|later)\s+(?:version|generation|variant)|successor|variants?"
    r"|v(?P<n3>[2-5]))\b)",
    re.I,
)
# Words that ask *about* a subject without naming one: "缺点", "原理", "example"...
_GENERIC = _word_set(
    """
    缺点 优点 优缺点 优势 劣势 不足 局限 局限性 原理 例子 举例 示例 应用 用途 场景 应用场景 步骤 流程 方法 办法
    特点 作用 意义 含义 定义 概念 意思 介绍 解释 详细 详细点 公式 参数 实现 代码 哪里 哪儿 怎么用 用法 好处 坏处
    举个 展开 说说 讲讲
    advantages disadvantages advantage disadvantage pros cons example examples use uses usage more detail
    drawback drawbacks downside downsides limitation limitations weakness weaknesses benefit benefits any
    alternative alternatives step steps stage stages first second third last next
    details why how works work mean means meaning definition define
    """
)
_MAX_TERMS = 4

# The subject of a Chinese question is what comes before its predicate; these start one (at word boundaries,
# so 比 in 比特 or 在 in 存在 do not count). 和/跟 are not among them: "A 和 B 的区别" is about both.
_ZH_LEAD = re.compile(
    r"^\s*(?:请问|请|我想知道|想知道|想问一下|想问|问一下|你知道|麻烦)?\s*(?:介绍一下|介绍|说说|讲讲|解释一下|解释|谈谈)?\s*"
)
# "什么是 X？" asks about X: what follows the lead is the subject even with no predicate after it.
_ZH_WHAT_IS = re.compile(r"\s*(?:什么是|什么叫做?|何为|何谓)\s*")
_ZH_PREDICATE = re.compile(
    r"是|怎么|怎样|如何|为什么|为何|为啥|有哪些|有什么|有啥|有何|有没有|有|哪|比|相比|对比|能|可以|会|要|应该|指|叫"
    r"|属于|包括|包含|分为|用于|用来|由|在|到底|具体|主要|咋|吗"
)
_TRAILING_PARTICLE = re.compile(r"\s*(?:(?:里|中)?(?:所说的|说的|讲的|提到的)|的)\s*$")
_ZH_CONNECTOR = re.compile(r"里说的|中说的|里面的|里的|中的|里|中|的|之")
_EN_SUBJECT = (
    re.compile(
        r"^\s*(?:what|who)\s+(?:is|are|was|were)\s+(?:the\s+\w+(?:\s+\w+)?\s+of\s+)?(?:an?\s+|the\s+)?"
        r"(?P<s>[^?.!]+)",
        re.I,
    ),
    re.compile(r"^\s*(?:what|how)\s+(?:does|do|did)\s+(?:an?\s+|the\s+)?(?P<s>[^?.!]+?)\s+(?:mean|work|do)\b", re.I),
    re.compile(r"^\s*(?:explain|describe|define|tell me about)\s+(?:an?\s+|the\s+)?(?P<s>[^?.!]+)", re.I),
)
# A question that asks *for* an entity: its answer names the subject of what follows.
_ASKS_FOR_ENTITY = re.compile(r"哪(?:个|种|一|款|类|位|家)|叫什么|叫啥|什么名字|\bwhich\b|\bcalled\b", re.I)
_ANSWER_SUBJECT = re.compile(r"\s*(?P<s>[^，,：:；;（(]{1,24}?)\s*(?:是|：|:|，|,|\bis\b|\bare\b|（|\()")
_LATIN_RUN = re.compile(r"[A-Za-z0-9][\w+#.\-]*(?:\s+[A-Za-z0-9][\w+#.\-]*)*")
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+#.\-]*")
_LEADING_NAME = re.compile(
    rf"\s*(?P<name>[A-Za-z][A-Za-z0-9_+#.\-]*(?:\s+[A-Za-z0-9][A-Za-z0-9_+#.\-]*)*)\s*(?=[{CJK_CHARS}])"
)
# Ellipses that keep the subject: a comparison ("和 GPT 比呢？") and a degree ("太小呢？" after "……太大会怎样？").
_COMPARED_WITH = re.compile(r"^(?:和|跟|与|同|相比|对比|比起)")
_DEGREE = re.compile(r"^(?:太|过|更|很|比较|特别)")


def _content_terms(text: str, tokenizer: Tokenizer) -> list[str]:
    """Precise-mode words that name a subject: stopwords, references and generic asks removed."""
    terms: list[str] = []
    for word in tokenizer.words(text):
        if word in _GENERIC or _ZH_REFERENCE.fullmatch(word) or _EN_REFERENCE.fullmatch(word):
            continue
        if is_cjk(word) and _QUESTION_WORD.search(word):  # 哪几个, 几层, 为什么: what is asked, not about what
            continue
        if len(word) == 1 and not word.isascii():
            continue  # single CJK characters are too vague to carry a topic
        if word not in terms:
            terms.append(word)
    return terms


def _successor(text: str) -> re.Match[str] | None:
    """A "second version / 改进版" phrase in the question."""
    return _ZH_SUCCESSOR.search(text) or _EN_SUCCESSOR.search(text)


def _ellipsis(text: str, tokenizer: Tokenizer) -> str | None:
    """X of "那 X 呢？" / "what about X?" when X names something (not a reference, a question or a generic ask)."""
    text = text.strip().rstrip(_END_MARKS)
    match = None if len(text) > _MAX_PARSE_CHARS else _ZH_ELLIPSIS.fullmatch(text) or _EN_ELLIPSIS.fullmatch(text)
    if match is None:
        return None
    x = (match.group("x") or match.group("y") or "").strip()
    if len(x) > 30 or _QUESTION_WORD.search(x) or _ZH_REFERENCE.search(x) or _EN_REFERENCE.search(x):
        return None
    return x if _content_terms(x, tokenizer) else None


# A question that opens with what it asks and names one short thing besides: "怎么缓解？", "为什么有效？".
_ZH_ASK_FIRST = re.compile(
    r"^\s*(?:怎么|怎样|如何|为什么|为何|为啥|有哪些|有什么|有啥|有何|能不能|能否|是否|可以|要|哪个|哪种|哪一个|哪一种)"
)
# An ordinal that points into the previous answer's list: "第二步具体做什么？", "第三点呢？".
_ZH_ORDINAL = re.compile(r"^\s*第[一二三四五六七八九十\d]{1,2}(?:步|个|点|种|类|阶段|部分|条|层)")
_EN_ORDINAL = re.compile(
    r"\bthe\s+(?:first|second|third|fourth|fifth|last|next|final)\s+(?:step|stage|phase|part|point|one)\b", re.I
)
_ZH_YES_NO = re.compile(r"[吗么][\s?？。!！]*$")
_MAX_BARE_ASK_CHARS = 4
# A clause that only sets the circumstance ("推理时", "训练过程中") is not what a question is about. Its
# activity has two characters at least (实时 and 同时 are words), and 时 does not start a word (时间, 时序).
_CIRCUMSTANCE = re.compile(
    r"\s*(?P<c>[^，,。；;？?！!]{2,12}?)(?:的时候|时候|时(?![间刻序长代段期效])|过程中|之后|以后|之前|以前|期间)"
)


def _bare(content: Sequence[str]) -> bool:
    """One short Chinese word: a verb or a generic noun (缓解, 解决办法, 越大越好, 关掉), not a subject."""
    return len(content) == 1 and is_cjk(content[0]) and len(content[0]) <= _MAX_BARE_ASK_CHARS


def _asks_without_subject(text: str, content: Sequence[str], tokenizer: Tokenizer) -> bool:
    """A Chinese question that names no subject, so it asks about the conversation's: one that opens with its
    question word or is a yes/no question (…吗？) and names one short word besides ("怎么缓解？"), or one whose
    only subject is a circumstance ("推理时要关掉吗？", "训练时怎么用？")."""
    if (_ZH_ASK_FIRST.match(text) or _ZH_YES_NO.search(text)) and _bare(content):
        return True
    end = _circumstance_end(text, tokenizer)
    if end is None:
        return False
    rest = _content_terms(text[end:], tokenizer)
    return not rest or _bare(rest)


def _circumstance_end(text: str, tokenizer: Tokenizer) -> int | None:
    """Where an opening circumstance clause ends ("推理时|要关掉吗？"); None when the text opens with none."""
    match = _CIRCUMSTANCE.match(text)
    return match.end() if match and _content_terms(match.group("c"), tokenizer) else None


def _names_own_subject(text: str, tokenizer: Tokenizer) -> bool:
    """The question names what it is about: a subject before its predicate or after "what is" (not a
    circumstance such as 训练时), or, in English, a name-like word (BERT, GPT-3) and no pronoun."""
    span = _subject_span(text, tokenizer)
    if span is not None:
        subject = text[span[0] : span[1]]
        circumstance = _circumstance_end(subject, tokenizer) == len(subject)
        if _usable_subject(subject) and not circumstance and _content_terms(subject, tokenizer):
            return True
    if any(is_cjk(char) for char in text):
        return False
    return _EN_NAME.search(text) is not None and _EN_PRONOUN.search(text) is None and not _EN_REFERENCE.search(text)


def _points_back_en(text: str) -> bool:
    """An English pronoun with no name before it in the question ("Does it have any weakness?")."""
    match = _EN_PRONOUN.search(text)
    return match is not None and not _EN_NAME.search(text[: match.start()])


def looks_like_followup(question: str, tokenizer: Tokenizer) -> bool:
    """Short / pronoun-led / continuation-led / elliptic questions, or ones naming no subject of their own."""
    text = unicodedata.normalize("NFKC", question).strip()
    content = _content_terms(text, tokenizer)
    if not content or _ellipsis(text, tokenizer) is not None or _points_back_en(text):
        return True
    successor = _successor(text)
    if successor is not None:
        rest = text[: successor.start()] + " " + text[successor.end() :]
        if successor.group("ref") or not _content_terms(rest, tokenizer):
            return True
    continuation = _CONTINUATION_START.match(text)
    if continuation and len(content) <= 3 and not _names_own_subject(text[continuation.end() :].lstrip(" ,，、"), tokenizer):
        return True  # "还有什么缺点？" continues; "And what is BERT?" and "那 BERT 是什么？" stand alone
    if _asks_without_subject(text, content, tokenizer) or _ZH_ORDINAL.match(text) or _EN_ORDINAL.search(text):
        return True
    if _ZH_REFERENCE.match(_LEADING_THEN.sub("", text, count=1)):  # "它们各自适合什么任务？"
        return True
    english = _EN_REFERENCE.search(text) is not None and not _EN_PRONOUN.search(text)
    has_reference = bool(_ZH_REFERENCE.search(text)) or english  # a pronoun after a name points to that name
    return has_reference and len(content) <= 2


# ------------------------------------------------------------------------------ the subject of a question


def _word_bounds(text: str, tokenizer: Tokenizer) -> frozenset[int] | None:
    """Offsets of the word boundaries of `text`; None when the segmentation does not line up with it."""
    bounds, position = {0}, 0
    for piece in tokenizer.pieces(text):
        position += len(piece)
        bounds.add(position)
    return frozenset(bounds) if position == len(text) else None


def _whole_words(match: re.Match[str], bounds: frozenset[int] | None) -> bool:
    return bounds is None or (match.start() in bounds and match.end() in bounds)


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _zh_subject_span(text: str, bounds: frozenset[int] | None) -> tuple[int, int] | None:
    """The noun phrase before the first predicate marker: "DCN 网络" of "DCN 网络是什么结构？"."""
    lead = _ZH_LEAD.match(text)
    start = lead.end() if lead else 0
    what_is = _ZH_WHAT_IS.match(text, start)
    start = what_is.end() if what_is else start
    first = next((m for m in _ZH_PREDICATE.finditer(text, start) if _whole_words(m, bounds)), None)
    if first is None and what_is:  # "什么是梯度消失？": all of the rest
        span = _strip_span(text, start, len(text.rstrip(_END_MARKS)))
        return span if span[1] > span[0] else None
    if first is None or first.start() == start:  # "应该怎么…": no subject before the predicate
        return None
    end = start + len(_TRAILING_PARTICLE.sub("", text[start : first.start()]))
    span = _strip_span(text, start, end)
    return span if span[1] > span[0] else None


def _components(text: str, span: tuple[int, int], bounds: frozenset[int] | None) -> list[tuple[int, int]]:
    """The parts of a subject joined by 的/里/中: "知识蒸馏", "soft targets" of "知识蒸馏里说的 soft targets"."""
    parts, position = [], span[0]
    for match in _ZH_CONNECTOR.finditer(text, span[0], span[1]):
        if _whole_words(match, bounds) and match.start() > position:
            parts.append(_strip_span(text, position, match.start()))
            position = match.end()
    parts.append(_strip_span(text, position, span[1]))
    return [part for part in parts if part[1] > part[0]]


def _subject_span(text: str, tokenizer: Tokenizer) -> tuple[int, int] | None:
    """Where the subject of `text` lies. A superlative tail ("最重要的超参数") or a generic one ("的原理", "的区别")
    is what is asked about it, not part of it."""
    if len(text) > _MAX_PARSE_CHARS:
        return None
    head = text.rstrip(_END_MARKS)
    for pattern in _EN_SUBJECT:
        match = pattern.match(head)
        if match and len(match.group("s").split()) <= 8:
            return _strip_span(text, *match.span("s"))
    bounds = _word_bounds(text, tokenizer)
    span = _zh_subject_span(text, bounds)
    if span is None:  # no predicate marker found ("ResNet 解决了什么问题？"): a leading name is the subject
        name = _LEADING_NAME.match(text)
        return _strip_span(text, *name.span("name")) if name else None
    parts = _components(text, span, bounds)
    superlative = next((i for i, (start, _) in enumerate(parts) if text.startswith("最", start)), len(parts))
    named = [part for part in parts[:superlative] if _content_terms(text[part[0] : part[1]], tokenizer)]
    return (span[0], named[-1][1]) if named else None  # "LoRA 的原理": the trailing generic ask is not the subject


def _usable_subject(subject: str) -> bool:
    return bool(subject) and not (
        _QUESTION_WORD.search(subject) or _ZH_REFERENCE.search(subject) or _EN_PRONOUN.search(subject)
    )


def _answer_subject(answer: str) -> str | None:
    """What an answer's first sentence is about: the words before its first 是/：/，/is."""
    text = re.sub(r"\[\d+\]", "", unicodedata.normalize("NFKC", answer)).strip()
    first = re.split(r"[。！？!?\n]|\.(?=\s|$)", text, maxsplit=1)[0]
    match = _ANSWER_SUBJECT.match(first)
    subject = match.group("s").strip() if match else first.strip()
    return subject if 0 < len(subject) <= 24 and _usable_subject(subject) else None


def question_subject(question: str, tokenizer: Tokenizer, answer: str = "") -> str:
    """The main entity of a question: the noun phrase before its predicate (zh) or after "what is" (en); the
    answer's subject when the question asked for one (哪个/which); else its key terms."""
    text = question.strip()
    if answer and _ASKS_FOR_ENTITY.search(text):
        named = _answer_subject(answer)
        if named:
            return named
    span = _subject_span(text, tokenizer)
    if span is not None and _usable_subject(text[span[0] : span[1]]):
        return text[span[0] : span[1]]
    terms = _content_terms(text, tokenizer)
    return " ".join(_original_case(t, text) for t in terms[:_MAX_TERMS])


def _original_case(term: str, source: str) -> str:
    """`term` (normalized) as spelled in `source` ("lora" -> "LoRA")."""
    match = re.search(re.escape(term), unicodedata.normalize("NFKC", source), re.I)
    return match.group(0) if match else term


# ------------------------------------------------------------------------------ substitution


def _word_char(char: str) -> bool:
    return char.isalnum() or is_cjk(char)


def _join(*parts: str) -> str:
    """The parts concatenated, with a space where a Latin word would otherwise touch a neighbouring word."""
    out = ""
    for part in parts:
        if out and part and _word_char(out[-1]) and _word_char(part[0]) and (out[-1].isascii() or part[0].isascii()):
            out += " "
        out += part
    return out


def _substitute_references(text: str, subject: str) -> str | None:
    """The question with each reference to the previous subject replaced by it; None when it holds none."""
    text = _LEADING_THEN.sub("", text, count=1)
    spans = [(m.start(), m.end(), subject) for m in _ZH_SUBSTITUTABLE.finditer(text)]
    spans += [(m.start(), m.end(), subject) for m in _EN_DEMONSTRATIVE.finditer(text)]
    if _points_back_en(text):  # a pronoun after a name in the question points to that name
        for m in _EN_PRONOUN.finditer(text):
            possessive = m.group(0).lower() in ("its", "their")
            spans.append((m.start(), m.end(), f"{subject}'s" if possessive else subject))
    pieces, position = [], 0
    for start, end, replacement in sorted(spans):
        if start >= position:
            pieces += [text[position:start], replacement]
            position = end
    return _join(*pieces, text[position:]) if pieces else None


def _resolve_successor(text: str, match: re.Match[str], subject: str) -> str:
    """"它的第二版改了哪儿？" -> "DCN 网络 DCN-V2 DCN V2 改了哪儿？": a numbered version of a named subject goes by
    its versioned names (notes write "DCN-v2", not "DCN 的第二版"); any other successor stays a phrase."""
    what = match.group("what")
    groups = match.groupdict()
    number = groups.get("n") or groups.get("n2") or groups.get("n3")
    n = _NUMBERS.get(number.lower(), number) if number else None
    name = _LATIN_NAME.search(subject)
    if n and name:
        phrase = f"{subject} {name.group(0)}-V{n} {name.group(0)} V{n}"
    elif is_cjk(what):
        phrase = f"{subject}的{what}"
    else:
        phrase = f"{subject}'s {what}" if match.group("ref") else f"{subject} {what}"
    return _join(text[: match.start()], phrase, text[match.end() :])


def _substitute_ellipsis(previous: str, x: str, subject: str, tokenizer: Tokenizer) -> str | None:
    """The previous question asked about X: X replaces the last part of its subject ("soft targets" -> X)."""
    text = previous.strip()
    span = _subject_span(text, tokenizer)
    if span is None:  # "Transformer 的缺点呢？", itself resolved: the subject it carries is in it
        found = text.find(subject)
        span = (found, found + len(subject)) if found >= 0 else None
    if span is None:
        return None
    start, end = _components(text, span, _word_bounds(text, tokenizer))[-1]
    latin_x = not is_cjk(x)
    runs = [m.span() for m in _LATIN_RUN.finditer(text, start, end)]
    if runs and (runs[0] != (start, end)):  # a mixed part ("NSP 任务"): replace the side X belongs to
        if latin_x:
            start, end = runs[-1]
        else:
            cjk_start = next((i for i in range(start, end) if is_cjk(text[i])), start)
            start, end = _strip_span(text, cjk_start, end)
    return _join(text[:start], x, text[end:])


def _apply(question: str, previous: str, subject: str, tokenizer: Tokenizer) -> tuple[str, bool]:
    """`question` made standalone with the subject of `previous`; True when X of an ellipsis became the subject."""
    text = _LEADING_THEN.sub("", question.strip(), count=1) or question.strip()
    successor = _successor(text)
    if successor is not None:
        resolved = _resolve_successor(text, successor, subject)
        return _substitute_references(resolved, subject) or resolved, False
    x = _ellipsis(question.strip(), tokenizer)
    if x is not None and _COMPARED_WITH.match(x):
        return f"{_join(subject, x)}呢？", False
    degree = _DEGREE.match(x) if x is not None else None
    if x is not None and degree is not None:
        at = previous.find(degree.group(0))
        if at >= 0 and at + len(x) <= len(previous):  # the same adverb, another degree: swap the two
            return previous[:at] + x + previous[at + len(x) :], False
    if x is not None:
        substituted = _substitute_ellipsis(previous, x, subject, tokenizer)
        if substituted is not None:
            return substituted, True
    substituted = _substitute_references(text, subject)
    if substituted is not None:
        return substituted, False
    if normalize(subject) in normalize(text):
        return question, False
    return f"{subject} {text}", False


def previous_user_questions(question: str, history: Sequence[Turn]) -> list[str]:
    """Earlier user questions, most recent first (the current question itself skipped if repeated)."""
    current = normalize(question).strip()
    return [
        turn.content
        for turn in reversed(history)
        if turn.role == "user" and turn.content.strip() and normalize(turn.content).strip() != current
    ]


def _resolve(question: str, history: Sequence[Turn], tokenizer: Tokenizer, depth: int) -> tuple[str, str | None]:
    """(standalone question, subject carried on or None when it is the standalone question's own)."""
    if not history or not looks_like_followup(question, tokenizer):
        return question, None
    current = normalize(question).strip()
    for i in range(len(history) - 1, -1, -1):
        turn = history[i]
        if turn.role != "user" or not turn.content.strip() or normalize(turn.content).strip() == current:
            continue
        previous, subject = turn.content, None
        if depth < 3:
            previous, subject = _resolve(previous, history[:i], tokenizer, depth + 1)
        if subject is None:
            answer = next((t.content for t in history[i + 1 :] if t.role == "assistant"), "")
            subject = question_subject(previous, tokenizer, answer)
        if not subject:
            continue
        resolved, elliptic = _apply(question, previous, subject, tokenizer)
        return resolved, None if elliptic else subject  # "那 X 呢？" made X the subject
    return question, None


def resolve_followup(question: str, history: Sequence[Turn], tokenizer: Tokenizer) -> str:
    """A follow-up made standalone with the subject of the question before it; other questions unchanged.

    References (它/这种/这么做/it) are replaced by that subject, "它的第二版" becomes the subject's second version,
    "那 X 呢？" asks the previous question about X, and anything else is prefixed with the subject. A previous
    question that was itself a follow-up is resolved first, so a chain of follow-ups keeps the subject of the
    question that started it.
    """
    return _resolve(question, history, tokenizer, 0)[0]
