"""Follow-up questions without an LLM: make "那它有什么缺点？" standalone using the conversation history.

`resolve_followup` is the heuristic that stands in when there is no LLM, or when its rewrite
(`rag.question_rewrite`) fails or is unusable: the subject of the previous user question (its main entity)
replaces the follow-up's references, takes X's place in an ellipsis ("那 X 呢？", `rag.ellipsis`), or is
prepended.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence

from rag.answer.citations import strip_markers
from rag.ellipsis import CIRCUMSTANCE, LATIN_RUN, ellipsis_x, named_successor, resolve_ellipsis
from rag.ordinals import asks_for_item, join_words, resolve_ordinal
from rag.question_subject import (
    EN_PRONOUN,
    EN_REFERENCE,
    END_MARKS,
    ZH_REFERENCE,
    content_terms,
    question_subject,
    subject_components,
    subject_span,
    usable_subject,
    whole_words,
    word_bounds,
)
from rag.successors import successor as find_successor
from rag.successors import successor_phrase
from rag.text import CJK_CHARS, Tokenizer, is_cjk, normalize
from rag.types import Turn

# References that stand for the subject itself, so the subject can take their place ("这两", "前者" cannot).
_ZH_SUBSTITUTABLE = re.compile(
    r"它们?|这么做|这样做|那样做|这么|这个|那个|这种|那种|这类|那类|这样|那样"
    r"|(?<![因如彼从])此(?![外])|(?<![应活])该(?![怎如不])|(?<![尤极])其(?![他它中实余次后])"
)
MAX_JOINED_TERMS = 12  # content words of a follow-up read for two terms of the last answer joined by 和
_DEFINITION_ASKED = re.compile(r"什么是|是什么|指什么|什么意思|是啥|啥是|含义|定义")
# A reference to two things at once: the subjects of the last two questions ("LSTM 是什么？" "GRU 呢？" "它们有什么区别？").
_ZH_PLURAL = re.compile(r"它们|两者|二者|这两|那两|前者和后者")
_EN_PLURAL = re.compile(r"\b(?:they|them|their|both|the two|these two|those two)\b", re.I)
_DEMONSTRATIVES = frozenset({"这个", "那个", "这种", "那种", "这类", "那类"})
# "Why is PPO used there?", "What happens then?": a closing there/then points at the previous subject.
_EN_THERE = re.compile(r"\b(?:there|then)$", re.I)
# "Which one is usually given up?", "which of them…": one of the things the previous turn named
_EN_PARTITIVE = re.compile(r"\bwhich (?:one|ones|of (?:them|these|those|the (?:two|three|four|five)))\b", re.I)
_EN_DEGREE = re.compile(
    r"(?:low|high|small|large|big|fast|slow|good|bad|long|short|deep|shallow)(?:er|ger|ter)?|better|worse|more|less",
    re.I,
)
# An English question without a verb that asks a figure or a kind of something ("How many parameters?", "What
# learning rate?"): of the conversation's subject.
_EN_BARE_ASK = re.compile(r"(?:how (?:many|much)|what|which)(?:\s+[a-z][\w-]*){1,3}\s*[?？]?", re.I)
_EN_VERB = re.compile(
    r"\b(?:is|are|was|were|be|do|does|did|can|could|should|would|will|has|have|had|means?|works?|uses?)\b", re.I
)
_EN_DEMONSTRATIVE = re.compile(r"\b(?:this|that|these|those)\b(?=\s*(?:[?.!,]|$))", re.I)
# A name-like token before an English pronoun is its antecedent: inner capitals or digits (BiLSTM, GPT3), a
# capitalized word after the first one (not "I"), or Chinese.
_EN_NAME = re.compile(rf"\b[A-Za-z]+[A-Z0-9][A-Za-z0-9]*\b|(?<=\s)(?!I\b)[A-Z][a-z]+\b|[{CJK_CHARS}]")
# "Which RL algorithm does it use?": "it", after the asked phrase and its verb, is what the question is about
_EN_INVERTED_IT = re.compile(
    r"\s*(?:which|what|how many|how much)\b(?:(?!\b(?:and|or|but|is|are)\b)[^?,.;]){0,40}?\b(?:do|does|did|is|was|are|were|can|could|would|should|will|has|have)"
    r"\s+(?:it|they)\b",
    re.I,
)
_CONTINUATION_START = re.compile(
    r"^\s*(?:那么|那|还有|另外|然后呢|接着|and\b|also\b|what about\b|how about\b|and what about\b|then\b)",
    re.I,
)
_LEADING_THEN = re.compile(r"^\s*(?:那么|那(?![个种样些类么])|还有|另外)\s*")
# 它 with no clause mark before it: a clause-mate name is its clause's subject, which a Chinese pronoun does not
# stand for ("CBAM 跟它比多了什么？"); "BERT 和它的变体" is the exception, a possessive joined to the name.
# "在里面 / 在其中 / 在这当中", or a question opening with 其中 or 里面 ("其中的分区容错性指什么？"): inside the
# previous subject ("温度在里面起什么作用？" after "什么是知识蒸馏？")
_ZH_INSIDE_IT = re.compile(
    r"(?<=在)(?:这|那)?(?:里面|里头|当中|之中)|(?<=在)其中|^(?:那么?\s*)?(?:其中|(?:这|那)?(?:里面|里头|当中))"
)
_ZH_IT_IN_CLAUSE = re.compile(r"^[^，,。；;：:？?！!]+?它")
_ZH_IT_AFTER_AND = re.compile(r"[和与及跟同]\s*它们?的")
Known = Callable[[str], bool] | None  # whether the notes use a word


# A question that opens with what it asks and names one short thing besides: "怎么缓解？", "为什么有效？".
_ZH_ASK_FIRST = re.compile(
    r"^\s*(?:怎么|怎样|如何|为什么|为何|为啥|有哪些|有什么|有啥|有何|能不能|能否|是否|可以|要|哪个|哪种|哪一个|哪一种"
    r"|是(?:怎么|怎样|如何|为什么|为何|为啥|什么|谁|哪))"  # "是怎么解决的？": the copula without its subject
)
# A verb of remedy with its object left out ("ReLU 为什么能缓解？", "梯度裁剪能解决吗？"): the object is the
# conversation's subject, a problem.
_ZH_REMEDY_OF_IT = re.compile(r"(?:缓解|解决|避免|防止|改善|克服|减轻|抑制)(?:掉|了)?(?:吗|么|呢)?[\s?？。!！]*$")
# "为什么要用正弦函数？", "为啥选 Adam？": asked of what uses it, the conversation's subject
_ZH_WHY_USE = re.compile(r"^\s*(?:那么?)?\s*(?:为什么|为啥|为何)(?:要|会|还要|非要|偏要)?(?:用|使用|采用|选用|选择|选)")
# Why it can do something, asked of what can: "为什么能缓解梯度消失？" after "什么是残差连接？" (not "为什么会过拟合？",
# whose subject may be what happens)
_ZH_WHY_CAN = re.compile(r"^\s*(?:那么?)?\s*(?:为什么|为啥|为何)(?:它)?(?:能够|能|可以)")
# A verb and a degree with no subject: "设太高会怎样？", "调小一点呢？".
_ZH_VERB_DEGREE = re.compile(r"^\s*[\u4e00-\u9fff]{1,2}(?:太|过于|得太)[高低大小多少快慢长短深浅]")
_ZH_YES_NO = re.compile(r"[吗么][\s?？。!！]*$")
_MAX_BARE_ASK_CHARS = 4
# Chinese drops a subject the conversation gives: a question may open with a modal or an adverb, or with the other
# half of a comparison, and name at most this many words besides.
_ZH_ZERO_SUBJECT = re.compile(
    r"\s*(?:会不会|能不能|能否|可不可以|需不需要|要不要|应不应该|是不是|是否|一般|通常|具体|到底|大概|和|跟|与|同|相比|比起)"
)
# A bare modal drops the subject in a yes/no question ("会影响精度吗？") or one that asks what it needs or suits
# ("需要什么硬件？"); "应该怎么设置学习率？" asks how to do something and stands alone.
# ... and so does a verb of parts ("分为哪两类？", "包括哪几部分？", "由什么组成？"): parts of the subject
_ZH_MODAL = re.compile(r"\s*(?:能用|可以用|会|能|可以|需要|应该|该|适合|适用于|用于|用在|分为|分成|包括|包含|由)")
_ZH_ASKS_WHAT = re.compile(r"什么|哪些|哪种|哪个|哪几|哪[两二三四五六七八九十]|多少|多大")
_ZH_MORE_THE_MORE = re.compile(r"\s*越[^，,。？?]{1,6}越")
_MAX_ZERO_SUBJECT_TERMS = 2
_ZH_DEGREE_WORD = re.compile(r"^(?:越|更|最)")
# An adjective with no noun after its 的: "常用的有哪几种？", "常见的是什么？"
_ZH_COMMON_ONES = re.compile(r"^\s*(?:最|比较)?(?:常用|常见|主要|典型|流行|重要)的(?:有|是|包括|都有)")
# ... or a modifier of the subject with no noun after its 的: "多头的有什么好处？" after "什么是注意力机制？"
_ZH_MODIFIED_ONE = re.compile(r"^\s*[\u4e00-\u9fff]{1,3}的(?:有什么|有啥|有哪些|又有什么)")
# A question whose whole subject is such a part or variant names whose it is not: "base 版本有多少参数？",
# "量化版本有什么好处？", "How many parameters does the base version have?" ask about the conversation's subject's.
_ZH_ASPECT_ONLY = re.compile(r"(?:[A-Za-z0-9][\w.+-]*\s*|(?:(?!的)[\u4e00-\u9fff]){1,4})(?:版本|版|部分|模块|变体|分支)")
_EN_ASPECT = re.compile(r"\bthe\s+(?:[a-z0-9][\w-]*\s+){1,2}(?:version|variant|part|module|component|branch)\b")


def _bare(content: Sequence[str]) -> bool:
    """One short Chinese word: a verb or a generic noun (缓解, 解决办法, 越大越好, 关掉), not a subject."""
    return len(content) == 1 and is_cjk(content[0]) and len(content[0]) <= _MAX_BARE_ASK_CHARS


def _asks_without_subject(text: str, content: Sequence[str], tokenizer: Tokenizer) -> bool:
    """A Chinese question that names no subject, so it asks about the conversation's: one that opens with its
    question word or is a yes/no question (…吗？) and names one short word besides ("怎么缓解？"), or one whose
    only subject is a circumstance ("推理时要关掉吗？", "训练时怎么用？")."""
    named = [term for term in content if not _ZH_DEGREE_WORD.match(term)]  # 更好, 越大, 最快: degrees, not subjects
    if (_ZH_ASK_FIRST.match(text) or _ZH_YES_NO.search(text)) and (_bare(named) or not named):
        return True
    if _ZH_COMMON_ONES.match(text) or _ZH_MODIFIED_ONE.match(text):  # "常用的有哪几种？": which of the subject's kinds
        return True
    if len(named) <= _MAX_ZERO_SUBJECT_TERMS and _opens_without_subject(text, tokenizer):
        return True
    end = _circumstance_end(text, tokenizer)
    if end is None:
        return False
    rest = content_terms(text[end:], tokenizer)
    return not rest or _bare(rest)


def _opens_without_subject(text: str, tokenizer: Tokenizer) -> bool:
    """A Chinese question that drops its subject: it opens with a modal or an adverb ("会影响精度吗？", "需要什么硬件？",
    "一般怎么检测？"), with 越…越… ("越大效果越好吗？") or with the other half of a comparison ("和 SGD 相比呢")."""
    if _ZH_MORE_THE_MORE.match(text):
        return True
    bounds = word_bounds(text, tokenizer)
    match = _ZH_ZERO_SUBJECT.match(text)
    if match is not None and whole_words(match, bounds):
        return True
    modal = _ZH_MODAL.match(text)
    if modal is None or not whole_words(modal, bounds):
        return False
    return bool(_ZH_YES_NO.search(text) or _ZH_ASKS_WHAT.search(text, modal.end()))


def _circumstance_end(text: str, tokenizer: Tokenizer) -> int | None:
    """Where an opening circumstance clause ends ("推理时|要关掉吗？"); None when the text opens with none."""
    match = CIRCUMSTANCE.match(text)
    return match.end() if match and content_terms(match.group("c"), tokenizer) else None


def _names_own_subject(text: str, tokenizer: Tokenizer) -> bool:
    """The question names what it is about: a subject before its predicate or after "what is" (not a
    circumstance such as 训练时), or, in English, a name-like word (BERT, GPT-3) and no pronoun."""
    span = subject_span(text, tokenizer)
    if span is not None:
        subject = text[span[0] : span[1]]
        circumstance = _circumstance_end(subject, tokenizer) == len(subject)
        if usable_subject(subject) and not circumstance and content_terms(subject, tokenizer):
            return True
    if any(is_cjk(char) for char in text):
        return False
    return _EN_NAME.search(text) is not None and EN_PRONOUN.search(text) is None and not EN_REFERENCE.search(text)


def _names_only_an_aspect(text: str, tokenizer: Tokenizer) -> bool:
    """The question's subject is a part or variant of something it does not name (`_ZH_ASPECT_ONLY`,
    `_EN_ASPECT`): "base 版本有多少参数？", "What does the base version add?" (not "BERT 的 base 版本……")."""
    if any(is_cjk(char) for char in text):
        span = subject_span(text, tokenizer)
        return span is not None and _ZH_ASPECT_ONLY.fullmatch(text[span[0] : span[1]].strip()) is not None
    return _EN_ASPECT.search(text) is not None and _EN_NAME.search(text) is None


def _points_back_en(text: str) -> bool:
    """An English pronoun with no name before it in the question ("Does it have any weakness?"), or the subject
    of a question's inverted verb whatever names the asked phrase holds ("Which RL algorithm does it use?")."""
    match = EN_PRONOUN.search(text)
    return match is not None and (not _EN_NAME.search(text[: match.start()]) or _EN_INVERTED_IT.match(text) is not None)


def looks_like_followup(question: str, tokenizer: Tokenizer) -> bool:
    """Short / pronoun-led / continuation-led / elliptic questions, or ones naming no subject of their own."""
    text = unicodedata.normalize("NFKC", question).strip()
    content = content_terms(text, tokenizer)
    if not content or ellipsis_x(text, tokenizer) is not None or _points_back_en(text):
        return True
    if _EN_THERE.search(text.rstrip(END_MARKS)) or _EN_PARTITIVE.search(text):
        return True
    if all(_EN_DEGREE.fullmatch(term) for term in content):  # "Is lower better?": degrees of what?
        return True
    if _EN_BARE_ASK.fullmatch(text) and not _EN_VERB.search(text) and not _EN_NAME.search(text):
        return True  # "How many parameters?": of what?
    successor = find_successor(text)
    if successor is not None:
        rest = text[: successor.start()] + " " + text[successor.end() :]
        after = text[successor.end() : successor.end() + 1]
        # it opens the question, not a longer Latin word ("v2x"); a Chinese word may follow ("第三代有什么变化？")
        opens = not text[: successor.start()].strip() and not (after.isascii() and after.isalnum())
        if successor.group("ref") or opens or not content_terms(rest, tokenizer):  # "v2 版本改进了什么？": whose?
            return True
    continuation = _CONTINUATION_START.match(text)
    if continuation and len(content) <= 3:
        # "还有什么缺点？" and "那 ALBERT 把它换成了什么？" continue; "And what is BERT?" and "那 BERT 是什么？" stand alone
        rest = text[continuation.end() :].lstrip(" ,，、")
        if ZH_REFERENCE.search(rest) or EN_PRONOUN.search(rest) or not _names_own_subject(rest, tokenizer):
            return True
    if _asks_without_subject(text, content, tokenizer) or asks_for_item(text):
        return True
    if len(content) <= 3 and (_ZH_REMEDY_OF_IT.search(text) or _ZH_VERB_DEGREE.match(text)):
        return True
    if _names_only_an_aspect(text, tokenizer):
        return True
    if ZH_REFERENCE.match(_LEADING_THEN.sub("", text, count=1)):  # "它们各自适合什么任务？"
        return True
    if _ZH_INSIDE_IT.search(text) or _ZH_WHY_USE.match(text) or _ZH_WHY_CAN.match(text):
        # inside the subject, or why the subject uses it or can do something
        return True
    if _ZH_IT_IN_CLAUSE.search(text) and not _ZH_IT_AFTER_AND.search(text):
        return True  # "为什么分类任务常用它？": 它 in the clause of a name cannot be that name
    english = EN_REFERENCE.search(text) is not None and not EN_PRONOUN.search(text)
    has_reference = bool(ZH_REFERENCE.search(text)) or english  # a pronoun after a name points to that name
    return has_reference and len(content) <= 2


# ------------------------------------------------------------------------------ substitution


def _substitute_references(text: str, subject: str) -> str | None:
    """The question with each reference to the previous subject replaced by it; None when it holds none."""
    text = _LEADING_THEN.sub("", text, count=1)
    spans = [(m.start(), _noun_after(text, m, subject), subject) for m in _ZH_SUBSTITUTABLE.finditer(text)]
    spans += [(m.start(), m.end(), f"{subject}中") for m in _ZH_INSIDE_IT.finditer(text)]
    spans += [(m.start(), m.end(), subject) for m in _EN_DEMONSTRATIVE.finditer(text)]
    if _points_back_en(text):  # a pronoun after a name in the question points to that name
        for m in EN_PRONOUN.finditer(text):
            possessive = m.group(0).lower() in ("its", "their")
            spans.append((m.start(), m.end(), f"{subject}'s" if possessive else subject))
    pieces, position = [], 0
    for start, end, replacement in sorted(spans):
        if start >= position:
            pieces += [text[position:start], replacement]
            position = end
    return join_words(*pieces, text[position:]) if pieces else None


def _noun_after(text: str, reference: re.Match[str], subject: str) -> int:
    """Where a reference ends: "这种词" of "怎么处理这种词？" stands for the subject "未登录词" whole when the subject
    ends with the noun after the demonstrative ("这种" alone would leave "未登录词词")."""
    end = reference.end()
    if reference.group(0) in _DEMONSTRATIVES:
        for k in range(min(4, len(subject)), 0, -1):
            noun = text[end : end + k]
            if len(noun) == k and all(is_cjk(ch) for ch in noun) and subject.endswith(noun):
                return end + k
    return end


def _apply(
    question: str, previous: str, subject: str, tokenizer: Tokenizer, answer: str = "", known: Known = None
) -> tuple[str, bool]:
    """`question` made standalone with the subject of `previous` (and its answer, whose numbered items an
    ordinal points to); True when X of an ellipsis became the subject."""
    text = _LEADING_THEN.sub("", question.strip(), count=1) or question.strip()
    if asks_for_item(text):
        resolved = resolve_ordinal(text, subject, answer)  # else: a step of the subject ("第五步呢？" is no subject)
        return (resolved, False) if resolved is not None else (join_words(subject, text), False)
    successor = find_successor(text)
    named = named_successor(text, successor, tokenizer) if successor is not None else None
    if named is not None:  # "它的变体 GRU 呢？": the previous question, asked about the successor
        start, end = subject_components(subject, (0, len(subject)), word_bounds(subject, tokenizer))[0]
        if subject[start:end] in previous:  # the entity, not what was asked of it ("BERT" of "BERT 的预训练任务")
            return previous.replace(subject[start:end], named, 1), True
    # "它后来的改进版……": the reference names whose successor it is; replacing it is enough
    if successor is not None and not (
        successor.group("ref") is None and ZH_REFERENCE.search(text[: successor.start()])
    ):
        phrase = successor_phrase(successor, subject, known)
        resolved = join_words(text[: successor.start()], phrase, text[successor.end() :])
        return _substitute_references(resolved, subject) or resolved, False
    aspect = _EN_ASPECT.search(text) if not is_cjk(text) else None
    if aspect is not None and _EN_NAME.search(text) is None:  # "the base version" -> "the base version of BERT"
        return join_words(text[: aspect.end()], f" of {subject}", text[aspect.end() :]), False
    elliptic = resolve_ellipsis(question, previous, subject, tokenizer)
    if elliptic is not None:
        return elliptic
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


def _asked(
    history: Sequence[Turn], tokenizer: Tokenizer, depth: int, current: str, known: Known = None
) -> Iterator[tuple[str, str, str]]:
    """Each earlier user question (but `current`) made standalone, with its subject and the answer it got, most
    recent first."""
    for i in range(len(history) - 1, -1, -1):
        turn = history[i]
        if turn.role != "user" or not turn.content.strip() or normalize(turn.content).strip() == current:
            continue
        previous, subject = turn.content, None
        if depth < 3:
            previous, subject = _resolve(previous, history[:i], tokenizer, depth + 1, known)
        answer = next((t.content for t in history[i + 1 :] if t.role == "assistant"), "")
        yield previous, subject or question_subject(previous, tokenizer, answer), answer


def _resolve(
    question: str, history: Sequence[Turn], tokenizer: Tokenizer, depth: int, known: Known = None
) -> tuple[str, str | None]:
    """(standalone question, subject carried on or None when it is the standalone question's own)."""
    if not history:
        return question, None
    asked = _asked(history, tokenizer, depth, normalize(question).strip(), known)
    if not looks_like_followup(question, tokenizer):
        subject = _subject_of_answer(question, next(asked, None), tokenizer)  # of the question just answered
        return (join_words(subject, question.strip()), subject) if subject else (question, None)
    for previous, subject, answer in asked:
        if not subject:
            continue
        if _ZH_PLURAL.search(question) or _EN_PLURAL.search(question):
            subject = _both(question, subject, next(asked, None))
        text = _LEADING_THEN.sub("", question.strip(), count=1) or question.strip()  # as `_apply` reads it
        if asks_for_item(text) and resolve_ordinal(text, subject, answer) is None:
            # "第二种呢？" after "第一类是什么？": the list it counts in is the answer before
            earlier = next(asked, None)
            item = resolve_ordinal(text, earlier[1], earlier[2]) if earlier is not None and earlier[1] else None
            if earlier is not None and item is not None:
                return item, earlier[1]
        resolved, elliptic = _apply(question, previous, subject, tokenizer, answer, known)
        return resolved, None if elliptic else subject  # "那 X 呢？" made X the subject
    return question, None


def _subject_of_answer(question: str, last: tuple[str, str, str] | None, tokenizer: Tokenizer) -> str | None:
    """The subject of the `last` question (previous, subject, answer) when `question` asks about a common Chinese
    term its answer used ("温度有什么作用？" after an answer on 知识蒸馏 that says "多了一个参数T，称为温度"): it asks
    about the term there, not in general. None for a question asking what the term is (a definition stands
    alone), a term in Latin letters (BERT, beam size), which names something of its own, or any other."""
    if last is None or not last[1]:
        return None
    _, subject, answer = last
    text = unicodedata.normalize("NFKC", question).strip()
    if _DEFINITION_ASKED.search(text):
        return None
    said = normalize(strip_markers(answer)).replace(" ", "")
    own = normalize(subject).replace(" ", "")

    def used(term: str) -> bool:
        term = normalize(term).replace(" ", "")
        chinese = is_cjk(term) and not LATIN_RUN.search(term)
        return chinese and len(term) >= 2 and term in said and term not in own

    span = subject_span(text, tokenizer)
    if span is not None:
        return subject if used(text[span[0] : span[1]]) else None
    content = content_terms(text, tokenizer)
    if len(content) == 1:  # "温度一般设多少？": one word that names something
        return subject if used(content[0]) else None
    # "生成器和判别器分别做什么？" after an answer that says "训练判别器与生成器": two of its terms, joined (a
    # question names a few; a pathological one is not scanned pair by pair)
    terms = [t for t in dict.fromkeys(content[:MAX_JOINED_TERMS]) if used(t)]
    pairs = ((a, b) for a in terms for b in terms if a != b)
    joined = any(re.search(f"{re.escape(a)}\\s*(?:和|与|跟|及)\\s*{re.escape(b)}", text) for a, b in pairs)
    return subject if joined else None


def _both(question: str, subject: str, earlier: tuple[str, str, str] | None) -> str:
    """"A 和 B" for a question about two things (它们, 两者, they), A being the subject of the `earlier` user
    question; `subject` alone when that question had the same subject or there is none."""
    other = earlier[1] if earlier else ""
    a, b = normalize(other), normalize(subject)
    # one inside the other is the same subject ("lstm", "lstm 的门"), but for a kind of it named by a word put
    # before it: 随机梯度下降 and 梯度下降, QLoRA and LoRA are two things
    kind = a != b and (b.endswith(a) or a.endswith(b)) and not re.search(r"的\s*$", b[: -len(a)] or a[: -len(b)])
    if not a or ((a in b or b in a) and not kind):
        return subject
    return f"{other} 和 {subject}" if is_cjk(question) else f"{other} and {subject}"


def continues_conversation(question: str, history: Sequence[Turn], tokenizer: Tokenizer) -> bool:
    """Whether `question` leans on the conversation: it looks like a follow-up (`looks_like_followup`), or asks
    about a common term the last answer used of its subject ("温度有什么作用？" after an answer on 知识蒸馏)."""
    if not history:
        return False
    if looks_like_followup(question, tokenizer):
        return True
    last = next(_asked(history, tokenizer, 0, normalize(question).strip()), None)
    return _subject_of_answer(question, last, tokenizer) is not None


def resolve_followup(question: str, history: Sequence[Turn], tokenizer: Tokenizer, known: Known = None) -> str:
    """A follow-up made standalone with the subject of the question before it; other questions unchanged.

    References (它/这种/这么做/it) are replaced by that subject, "它的第二版" becomes the subject's second version,
    "那 X 呢？" asks the previous question about X, and anything else is prefixed with the subject. A previous
    question that was itself a follow-up is resolved first, so a chain of follow-ups keeps the subject of the
    question that started it. `known`: whether the notes use a word (to spell a version as they do).
    """
    return _resolve(question, history, tokenizer, 0, known)[0]
