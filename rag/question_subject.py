"""The subject of a question: the main entity it asks about, and the words that name one.

"DCN 网络" of "DCN 网络是什么结构？", "过拟合" of "什么是过拟合？", "LoRA" of "What is LoRA?"; the answer's subject when
the question asked for an entity (哪个/which); else its key terms. The follow-up resolver (`rag.conversation`)
carries it from one question to the next.
"""

from __future__ import annotations

import re
import unicodedata

from rag.text import CJK_CHARS, Tokenizer, is_cjk


def word_set(text: str) -> frozenset[str]:
    """Whitespace-separated words of a multi-line literal."""
    return frozenset(text.split())


# Pronouns / demonstratives that point back into the conversation. "该" is skipped after 应/活 ("应该"),
# "其" inside common words (其他, 其中, 尤其, 其实...) does not count.
ZH_REFERENCE = re.compile(
    r"它们?|这么做|这样做|那样做|这么|这个|那个|这种|那种|这些|那些|这类|那类|这样|那样|这两|上述|前者|后者|两者|二者"
    r"|(?<![因如彼从])此(?![外])|(?<![应活])该(?![怎如不])|(?<![尤极])其(?![他它中实余次后])"
)

# ... not a word of a hyphenated name ("One-shot")
EN_REFERENCE = re.compile(r"(?<!-)\b(?:it|its|this|that|they|them|their|these|those|one)\b(?!-)", re.I)

# English pronouns that (nearly) always point back; "it" before an adjective of judgement is a dummy subject
# ("is it hard to train a GAN?") unless nothing follows the verb it governs ("why is it hard to train?").
EN_PRONOUN = re.compile(
    r"\b(?:it(?!\s+(?:is\s+|'s\s+)?(?:possible|necessary|true|better|worth|ok|okay|important|hard|easy)\b"
    r"(?!\s+to\s+\w+\s*[?？.!]*\s*$))"
    r"|its|they|them|their)\b",
    re.I,
)

END_MARKS = " \t\r\n?？。.!！"

# Longer questions are not parsed for a subject or an ellipsis (their key terms stand in): the patterns stay
# cheap whatever the input, and a long question is rarely a follow-up.
MAX_PARSE_CHARS = 200

QUESTION_WORD = re.compile(r"什么|怎么|怎样|为什么|为何|为啥|哪|吗|如何|多少|几|啥|\b(?:why|how|what|which|when|where|who)\b", re.I)
# A count of things ("两个", "三种"): how many, not of what
_COUNT_WORD = re.compile(r"[一二两三四五六七八九十]+(?:个|种|类|项|条|点|步|层|部分)?")

# Words that ask *about* a subject without naming one: "缺点", "原理", "example"...
GENERIC = word_set(
    """
    缺点 优点 优缺点 优势 劣势 不足 局限 局限性 原理 例子 举例 示例 应用 用途 场景 应用场景 步骤 流程 方法 办法
    特点 作用 意义 含义 定义 概念 意思 介绍 解释 详细 详细点 公式 参数 实现 代码 哪里 哪儿 怎么用 用法 好处 坏处
    举个 展开 说说 讲讲 不能 能否 可以 需要 应该 不会 是不是 适合 一般 通常 具体 到底 大概 相比 对比 比起
    advantages disadvantages advantage disadvantage pros cons example examples use uses usage more detail
    drawback drawbacks downside downsides limitation limitations weakness weaknesses benefit benefits any
    alternative alternatives step steps stage stages first second third last next
    details why how works work mean means meaning definition define give show tell explain elaborate describe
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

# "怎么 V O？": a how-to question opens with its verb; its object is what it is about.
_ZH_HOW_TO = re.compile(r"^\s*(?:请问)?\s*(?:该|要|应该)?(?:怎么|怎样|如何)(?:才能|去|来)?\s*")

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
    # "How is the reward model trained?": the passive's subject, before its participle
    re.compile(
        r"^\s*(?:how|why|when|where)\s+(?:is|are|was|were)\s+(?:an?\s+|the\s+)?(?P<s>[^?.!]+?)\s+"
        r"(?:\w+-)?(?:\w+ed|built|made|done|chosen|set|run|written|taken|given|known|kept|split|shown)\b",
        re.I,
    ),
)

# A question that asks *for* an entity: its answer names the subject of what follows.
_ASKS_FOR_ENTITY = re.compile(r"哪(?:个|种|一|款|类|位|家)|叫什么|叫啥|什么名字|\bwhich\b|\bcalled\b", re.I)

# "东京坐地铁用什么卡？" asks which card to use: the answer's name for it ("Suica 卡") is what a follow-up's 它 means.
# "ChatGLM-6B 是个什么模型？" asks what kind its subject is: there the subject stays.
_ASKS_WHICH_THING = re.compile(rf"(?:用|使用|采用|选|选用|选择|买|购买|推荐|需要|带|办)什么(?P<what>[{CJK_CHARS}]{{1,4}})")

_ANSWER_SUBJECT = re.compile(r"\s*(?P<s>[^，,：:；;（(]{1,24}?)\s*(?:是|：|:|，|,|\bis\b|\bare\b|（|\()")

_LEADING_NAME = re.compile(
    rf"\s*(?P<name>[A-Za-z][A-Za-z0-9_+#.\-]*(?:\s+[A-Za-z0-9][A-Za-z0-9_+#.\-]*)*)\s*(?=[{CJK_CHARS}])"
)


def content_terms(text: str, tokenizer: Tokenizer) -> list[str]:
    """Precise-mode words that name a subject: stopwords, references and generic asks removed."""
    terms: list[str] = []
    for word in tokenizer.words(text):
        if word in GENERIC or ZH_REFERENCE.fullmatch(word) or EN_REFERENCE.fullmatch(word):
            continue
        if is_cjk(word) and (QUESTION_WORD.search(word) or _COUNT_WORD.fullmatch(word)):
            continue  # 哪几个, 几层, 为什么: what is asked, not about what; 两个: how many
        if len(word) == 1 and not word.isascii():
            continue  # single CJK characters are too vague to carry a topic
        if word not in terms:
            terms.append(word)
    return terms


def word_bounds(text: str, tokenizer: Tokenizer) -> frozenset[int] | None:
    """Offsets of the word boundaries of `text`; None when the segmentation does not line up with it."""
    bounds, position = {0}, 0
    for piece in tokenizer.pieces(text):
        position += len(piece)
        bounds.add(position)
    return frozenset(bounds) if position == len(text) else None


def whole_words(match: re.Match[str], bounds: frozenset[int] | None) -> bool:
    return bounds is None or (match.start() in bounds and match.end() in bounds)


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
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
    first = next((m for m in _ZH_PREDICATE.finditer(text, start) if whole_words(m, bounds)), None)
    if first is None and what_is:  # "什么是梯度消失？": all of the rest
        span = strip_span(text, start, len(text.rstrip(END_MARKS)))
        return span if span[1] > span[0] else None
    if first is None or first.start() == start:  # "应该怎么…": no subject before the predicate
        return None
    end = start + len(_TRAILING_PARTICLE.sub("", text[start : first.start()]))
    span = strip_span(text, start, end)
    return span if span[1] > span[0] else None


def subject_components(text: str, span: tuple[int, int], bounds: frozenset[int] | None) -> list[tuple[int, int]]:
    """The parts of a subject joined by 的/里/中: "知识蒸馏", "soft targets" of "知识蒸馏里说的 soft targets"."""
    parts, position = [], span[0]
    for match in _ZH_CONNECTOR.finditer(text, span[0], span[1]):
        if whole_words(match, bounds) and match.start() > position:
            parts.append(strip_span(text, position, match.start()))
            position = match.end()
    parts.append(strip_span(text, position, span[1]))
    return [part for part in parts if part[1] > part[0]]


def subject_span(text: str, tokenizer: Tokenizer) -> tuple[int, int] | None:
    """Where the subject of `text` lies. A superlative tail ("最重要的超参数") or a generic one ("的原理", "的区别")
    is what is asked about it, not part of it."""
    if len(text) > MAX_PARSE_CHARS:
        return None
    head = text.rstrip(END_MARKS)
    for pattern in _EN_SUBJECT:
        match = pattern.match(head)
        if match and len(match.group("s").split()) <= 8:
            return strip_span(text, *match.span("s"))
    bounds = word_bounds(text, tokenizer)
    span = _zh_subject_span(text, bounds)
    if span is None:  # no predicate marker found ("ResNet 解决了什么问题？"): a leading name is the subject
        name = _LEADING_NAME.match(text)
        return strip_span(text, *name.span("name")) if name else None
    parts = subject_components(text, span, bounds)
    superlative = next((i for i, (start, _) in enumerate(parts) if text.startswith("最", start)), len(parts))
    named = [part for part in parts[:superlative] if content_terms(text[part[0] : part[1]], tokenizer)]
    return (span[0], named[-1][1]) if named else None  # "LoRA 的原理": the trailing generic ask is not the subject


def usable_subject(subject: str) -> bool:
    return bool(subject) and not (
        QUESTION_WORD.search(subject) or ZH_REFERENCE.search(subject) or EN_PRONOUN.search(subject)
    )


def _answer_subject(answer: str) -> str | None:
    """What an answer's first sentence is about: the words before its first 是/：/，/is."""
    text = re.sub(r"\[\d+\]", "", unicodedata.normalize("NFKC", answer)).strip()
    first = re.split(r"[。！？!?\n]|\.(?=\s|$)", text, maxsplit=1)[0]
    match = _ANSWER_SUBJECT.match(first)
    subject = match.group("s").strip() if match else first.strip()
    return subject if 0 < len(subject) <= 24 and usable_subject(subject) else None


def _answer_names_thing(answer: str, what: str) -> str | None:
    """The name the answer gives the thing asked for: "Suica 卡" for 卡 in "在东京建议购买 Suica 卡，…"."""
    text = re.sub(r"\[\d+\]", "", unicodedata.normalize("NFKC", answer))
    first = re.split(r"[。！？!?\n]", text, maxsplit=1)[0]
    for k in range(len(what), 0, -1):
        match = re.search(rf"(?<![A-Za-z0-9])[A-Za-z][A-Za-z0-9_+#.\-]*(?: [A-Za-z0-9][A-Za-z0-9_+#.\-]*)*\s*{re.escape(what[:k])}", first)
        if match:
            return match.group(0)
    return None


def question_subject(question: str, tokenizer: Tokenizer, answer: str = "") -> str:
    """The main entity of a question: the noun phrase before its predicate (zh) or after "what is" (en); the
    answer's subject when the question asked for one (哪个/which), or its name for the thing asked for (用什么卡);
    else its key terms."""
    text = question.strip()
    if answer and _ASKS_FOR_ENTITY.search(text):
        named = _answer_subject(answer)
        if named:
            return named
    thing = _ASKS_WHICH_THING.search(text) if answer else None
    if thing is not None:
        named = _answer_names_thing(answer, thing.group("what"))
        if named:
            return named
    span = subject_span(text, tokenizer)
    if span is not None and usable_subject(text[span[0] : span[1]]):
        return text[span[0] : span[1]]
    done_to = _object_of_how(text, tokenizer)
    if done_to:
        return done_to
    terms = content_terms(text, tokenizer)
    return " ".join(_original_case(t, text) for t in terms[:_MAX_TERMS])


def _object_of_how(text: str, tokenizer: Tokenizer) -> str | None:
    """What "怎么 V O？" does its verb to: "虚拟环境" of "怎么创建虚拟环境？", "过拟合" of "如何缓解过拟合？"."""
    how = _ZH_HOW_TO.match(text)
    if how is None:
        return None
    rest = text[how.end() :].rstrip(END_MARKS)
    words = tokenizer.words(rest)
    if len(words) < 2 or not is_cjk(words[0]) or len(words[0]) > 2 or not rest.startswith(words[0]):
        return None
    obj = rest[len(words[0]) :].strip()
    bounds = word_bounds(obj, tokenizer)
    if not obj or len(obj) > 20 or any(whole_words(m, bounds) for m in _ZH_PREDICATE.finditer(obj)):
        return None  # "怎么估算训练大模型需要多少显存": a clause, not an object
    return obj if usable_subject(obj) and content_terms(obj, tokenizer) else None


def _original_case(term: str, source: str) -> str:
    """`term` (normalized) as spelled in `source` ("lora" -> "LoRA")."""
    match = re.search(re.escape(term), unicodedata.normalize("NFKC", source), re.I)
    return match.group(0) if match else term
