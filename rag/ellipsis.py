"""Ellipsis in follow-ups without an LLM: "那 X 呢？" / "what about X?" asks the previous question again, about X.

`resolve_ellipsis` reads X and decides how the previous question takes it: compared with the subject ("和 GPT
比呢？"), another degree of the same adverb ("太小呢？"), a circumstance ("推理的时候呢？"), a part or version of the
subject ("无监督版本呢？"), an English time or setting ("And at inference time?"), an owner and its attribute ("BERT 的呢？"),
a sibling of another word of the question ("负样本呢？" after "……怎么构造正样本？"), or X in the place of the subject.
"""

from __future__ import annotations

import re

from rag.answer_types import attribute_translations
from rag.ordinals import join_words
from rag.question_subject import (
    EN_REFERENCE,
    END_MARKS,
    MAX_PARSE_CHARS,
    QUESTION_WORD,
    ZH_REFERENCE,
    content_terms,
    strip_span,
    subject_components,
    subject_span,
    word_bounds,
)
from rag.text import Tokenizer, is_cjk, normalize

# Both are matched whole against the question without its final marks (`END_MARKS`).
_ZH_ELLIPSIS = re.compile(r"(?:那么|那|还有)?(?P<x>[^，,。；;？?！!]+)呢")
_EN_ELLIPSIS = re.compile(
    r"(?:and\s+)?(?:what|how)\s+about\s+(?P<x>[^?.!]+)|and\s+(?P<y>(?:the\s+)?[\w.+#-]+(?:\s+[\w.+#-]+){0,2})", re.I
)
LATIN_RUN = re.compile(r"[A-Za-z0-9][\w+#.·\-]*(?:\s+[A-Za-z0-9][\w+#.·\-]*)*")  # "DALL·E 2" is one name
# Ellipses that keep the subject: a comparison ("和 GPT 比呢？") and a degree ("太小呢？" after "……太大会怎样？").
_COMPARED_WITH = re.compile(r"^(?:和|跟|与|同|相比|对比|比起)")
_DEGREE = re.compile(r"^(?:太|过|更|很|比较|特别)")
_PHASE = re.compile(r"阶段|过程|时期|环节|期间")  # "训练阶段": a circumstance named as a noun, which X replaces
# ... and in English, a time or a setting: "at inference time", "during training", "in PyTorch"
_EN_CIRCUMSTANCE = re.compile(r"(?:at|during|in|on|after|before|when|while|with|without)\s", re.I)
# A part or variant of something ("无监督版本", "编码器部分"): "那 X 呢？" asks about the subject's X
_ASPECT = re.compile(r"[\u4e00-\u9fff]{1,10}(?:版本|版|部分|模块|变体|分支)")
# A clause that only sets the circumstance ("推理时", "训练过程中") is not what a question is about. Its
# activity has two characters at least (实时 and 同时 are words), and 时 does not start a word (时间, 时序).
CIRCUMSTANCE = re.compile(
    r"\s*(?P<c>[^，,。；;？?！!]{2,12}?)(?:的时候|时候|时(?![间刻序长代段期效])|过程中|之后|以后|之前|以前|期间)"
)


def ellipsis_x(text: str, tokenizer: Tokenizer) -> str | None:
    """X of "那 X 呢？" / "what about X?" when X names something (not a reference, a question or a generic ask)."""
    text = text.strip().rstrip(END_MARKS)
    match = None if len(text) > MAX_PARSE_CHARS else _ZH_ELLIPSIS.fullmatch(text) or _EN_ELLIPSIS.fullmatch(text)
    if match is None:
        return None
    x = (match.group("x") or match.group("y") or "").strip()
    if len(x) > 30 or QUESTION_WORD.search(x) or ZH_REFERENCE.search(x) or EN_REFERENCE.search(x):
        return None
    # "And the formula?" asks the subject's formula: an attribute, not another thing to ask the last question of
    attribute = re.sub(r"^the\s+", "", x, flags=re.I).split()
    if attribute and all(attribute_translations(word) for word in attribute):
        return None
    return x if content_terms(x, tokenizer) else None


def resolve_ellipsis(question: str, previous: str, subject: str, tokenizer: Tokenizer) -> tuple[str, bool] | None:
    """`question`, an ellipsis, made standalone with `previous` (the last question) and its `subject`; True when
    X became the subject. None when `question` is no ellipsis, or none of the readings applies."""
    x = ellipsis_x(question.strip(), tokenizer)
    if x is not None and _COMPARED_WITH.match(x):
        return f"{join_words(subject, x)}呢？", False
    degree = _DEGREE.match(x) if x is not None else None
    if x is not None and degree is not None:
        at = previous.find(degree.group(0))
        if at >= 0 and at + len(x) <= len(previous):  # the same adverb, another degree: swap the two
            return previous[:at] + x + previous[at + len(x) :], False
    if x is not None and CIRCUMSTANCE.fullmatch(x) and not (CIRCUMSTANCE.search(previous) or _PHASE.search(subject)):
        at = previous.find(subject)  # "ChatGLM-6B 需要多少显存？" + "量化以后呢？": the same question, at that time
        if at >= 0:
            end = at + len(subject)
            return join_words(previous[:end], x, previous[end:].lstrip()), False
    if x is not None and _EN_CIRCUMSTANCE.match(x) and not is_cjk(x) and not is_cjk(previous):
        # "And at inference time?" after "What is dropout?": the last question, asked at that time
        return f"{previous.strip().rstrip(END_MARKS)} {x}?", False
    if x is not None and _ASPECT.fullmatch(x):
        at, span = previous.find(subject), subject_span(previous.strip(), tokenizer)
        whole = span is not None and len(subject_components(previous.strip(), span, None)) == 1
        if at >= 0 and whole:  # "什么是 SimCSE？" + "无监督版本呢？": the question, about SimCSE's unsupervised version
            end = at + len(subject)
            return join_words(previous[:end], f"的{x}", previous[end:]), False
    # "推理的时候" is a circumstance, not an owner and its attribute
    owner, _, attribute = (x or "").rpartition("的") if x and not CIRCUMSTANCE.fullmatch(x) else ("", "", "")
    if owner.strip() and normalize(attribute.strip()) in normalize(previous):
        # "BERT 的呢？" / "SGD 的学习率呢？" after "Adam 的学习率一般设多少？": the same asked of another owner
        x = owner.strip()
    elif owner.strip():
        # "遗忘门的作用呢？" after "LSTM 有哪几个门？": X names its own thing and what is asked of it; the last
        # question's predicate ("有哪几个门") is not asked again
        return f"{x}是什么？", True
    sibling = _sibling_word(previous, x, subject, tokenizer) if x is not None else None
    if x is not None and sibling is not None:
        # "SimCSE 怎么构造正样本？" + "负样本呢？": the same question of the other kind of sample, about SimCSE still;
        # "LSTM 的输入门有什么作用？" + "遗忘门呢？": of LSTM's other gate, which is what it is about now
        start, end, in_subject = sibling
        text = previous.strip()
        return text[:start] + x + text[end:], in_subject
    if x is not None:
        substituted = substitute_ellipsis(previous, x, subject, tokenizer)
        if substituted is not None:
            return substituted, True
    return None


_GLUED = frozenset("有是的在和与会能要呢吗")


def _sibling_word(previous: str, x: str, subject: str, tokenizer: Tokenizer) -> tuple[int, int, bool] | None:
    """The span in `previous` (stripped) of its one word that Chinese X is a sibling of: as long, ending alike,
    opening otherwise ("正样本" for "负样本", "训练集" for "测试集"), and whether it is a word of the subject; None
    when there is none or more than one."""
    text = previous.strip()
    if not 2 <= len(x) <= 6 or not all(is_cjk(ch) for ch in x) or x in text or (subject and subject in x):
        return None  # "非均匀量化呢？" after "什么是均匀量化？" names a kind of the subject: it replaces the subject
    bounds = word_bounds(text, tokenizer)
    if bounds is None:
        return None
    at = text.find(subject) if subject else -1
    shared = max(1, len(x) - 2)  # the head they share: 样本 of 正样本 / 负样本, 集 of 训练集 / 测试集
    found = [
        (i, i + len(x))
        for i in range(len(text) - len(x) + 1)
        if i in bounds
        # ... or a particle or verb jieba glued to its end ("输入|门有" of "LSTM 的输入门有什么作用？")
        and (i + len(x) in bounds or text[i + len(x) : i + len(x) + 1] in _GLUED)
        and all(is_cjk(ch) for ch in text[i : i + len(x)])
        and text[i + len(x) - shared : i + len(x)] == x[-shared:]
        and text[i] != x[0]
        # wholly outside the subject, or one of its words ("输入门" of "LSTM 的输入门"), not across its edge
        and (at < 0 or i + len(x) <= at or i >= at + len(subject) or (at <= i and i + len(x) <= at + len(subject)))
    ]
    if len(found) != 1:
        return None
    start, end = found[0]
    return start, end, at >= 0 and at <= start < at + len(subject)


def substitute_ellipsis(previous: str, x: str, subject: str, tokenizer: Tokenizer) -> str | None:
    """The previous question asked about X: X replaces the last part of its subject ("soft targets" -> X)."""
    text = previous.strip()
    span = subject_span(text, tokenizer)
    if span is None:  # "Transformer 的缺点呢？", itself resolved: the subject it carries is in it
        found = text.find(subject)
        span = (found, found + len(subject)) if found >= 0 else None
    if span is None:
        return None
    components = subject_components(text, span, word_bounds(text, tokenizer))
    start, end = components[-1]
    latin_x = not is_cjk(x)
    mixed_x = not latin_x and LATIN_RUN.search(x) is not None  # "Deep 部分" for "Cross 层": the whole part
    runs = [m.span() for m in LATIN_RUN.finditer(text, start, end)]
    names = [part for part in components[:-1] if [m.span() for m in LATIN_RUN.finditer(text, *part)] == [part]]
    if latin_x and not runs and names:  # "GPT 的预训练目标" + "那 BERT 呢？": a name replaces the name, not what is asked of it
        return join_words(text[: names[-1][0]], x, text[names[-1][1] :])
    if runs and (runs[0] != (start, end)) and not mixed_x:  # a mixed part ("NSP 任务"): replace the side X belongs to
        if latin_x:
            start, end = runs[-1]
        else:
            cjk_start = next((i for i in range(start, end) if is_cjk(text[i])), start)
            start, end = strip_span(text, cjk_start, end)
    return join_words(text[:start], x, text[end:])


def named_successor(text: str, successor: re.Match[str], tokenizer: Tokenizer) -> str | None:
    """The name an elliptic question gives the successor it asks about: "GRU" of "它的变体 GRU 呢？", "RoBERTa" of
    "what about its successor RoBERTa?"; None when it gives none."""
    stripped = text.strip().rstrip(END_MARKS)
    if not (_ZH_ELLIPSIS.fullmatch(stripped) or _EN_ELLIPSIS.fullmatch(stripped)):
        return None
    name = re.sub(r"呢$", "", text[successor.end() :].strip().rstrip(END_MARKS)).strip(" ,，、:：")
    if not name or len(name) > 30 or QUESTION_WORD.search(name) or ZH_REFERENCE.search(name) or EN_REFERENCE.search(name):
        return None
    return name if content_terms(name, tokenizer) else None
