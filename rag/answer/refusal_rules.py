"""Rules that refuse a question whatever the reader's probability, each for a reason a reader can check.

The reader's model weighs evidence; these rules catch what no weighing should let through: input that instructs
the assistant, a name the notes never spell, a figure or a date asked for that the passages never give, a
drawback asked for that no sentence the answer would quote states, a name the notes only list or only carry in
headings, a name no passage read spells (`passages_naming`, which the reader also uses to
answer from the passages that do), a term the question asks to define or gives in parentheses that no passage
read writes ("什么是批归一化？", "……（模式崩溃）"), and an English two-word name no passage read spells when the best
sentence is about its sibling ("layer normalization" for "batch normalization"). Each returns the reason shown
in explanations; `scripts/fit_reader.py` counts the questions they refuse as refused.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from rag.aliases import KIND_WORDS
from rag.answer.reader_features import QuestionProfile
from rag.answer.sentence_form import ITEM_NUMBER, states_something
from rag.answer.sentences import Sentence
from rag.answer_types import (
    DRAWBACK_NAMED,
    NUMBER_CHOICE,
    SOURCE_ASKED,
    YEAR_ASKED,
    is_instruction,
    must_state,
    names_source,
    states,
    states_drawback,
    states_quantity,
)
from rag.question_names import GLOSS, glossed_run, latin_names, without_glosses, written_together
from rag.text import CJK_CHARS, STOPWORDS, is_cjk, normalize, singular, spelled_as_one, written_form

if TYPE_CHECKING:
    from rag.answer.reader import Candidate

# A figure only a number gives: a quantity, not a count of things or kinds ("有几个门", "多少种方法", "how many": a
# list of the things answers)
MEASURE_ASKED = re.compile(
    rf"{NUMBER_CHOICE}|多少(?![种类项])|多大|取值范围|how much|几(?:位|层|维|倍|次|天|年|月|分钟|小时|度)", re.I
)
# ... and one that counts things, which a count in words answers ("GRU 有多少个门？" - "两个门")
COUNT_ASKED = re.compile(r"(?:多少|几)(?:个|种|类|项|条|部分|方面|点|步|阶段)|how many", re.I)
NAMED_MIN_CHARS = 3  # a name the notes may only list has at least this many characters
# A date as notes write it: a year ("2017", "2023年3月") or a month ("11 月 29 日", "March 2023").
DATE = re.compile(
    r"(?<!\d)(?:1[89]|20)\d\d(?!\d)|\d{2,4}\s*年|\d{1,2}\s*月"
    r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+\d",
    re.I,
)
_ITEM_SPLIT = re.compile(r"[、,，/|；;]|和|及|与|\bor\b|\band\b")
# examples named in passing: "如 Adam、RMSProp 等", "such as Adam and RMSProp"
_EXAMPLES = re.compile(r"(?:例如|比如|诸如|如|such as|e\.g\.)\s*([^。；;：:！？!?()（）]{1,60}?)\s*(?:等|etc\.?|[。；;！？!?]|$)")
_LATIN_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# words after which a name begins: an article, a copula, a preposition ("What is batch normalization?", "about
# group normalization")
_OPENS_NOUN_PHRASE = frozenset(
    "a an the is are was were about of for in on with between and or to by from than what".split()  # noqa: SIM905
)
# "什么是X？", "X是什么？": a question that only asks what a term is
DEFINITION_ASKED = re.compile(
    r"(?:请问)?(?:什么是|啥是|何为|何谓)\s*(?P<a>[^？?，,。]+?)\s*[？?]?"
    r"|(?:请问)?(?P<b>[^？?，,。]+?)\s*(?:是什么意思|是什么东西|是什么|是啥|指什么|是指什么|什么意思)\s*[？?]?"
)
_NOT_ONE_TERM = re.compile(r"[的和与及或跟里中之]")  # "LoRA 的原理", "A 和 B": not one term
# words around a term that only name its kind or its form ("剪枝方法", "早停法", "过拟合现象", "模型剪枝"): what
# shares the rest of it may well be about it
_KIND_WORDS = re.compile(r"^(?:模型|神经网络)|(?:方法|算法|技术|机制|策略|模型|现象|问题|过程|方式|概念|原理|法)$")
# "What is ZeRO?", "What is gradient clipping?": an English term of one to three words asked to be defined
_EN_DEFINITION_ASKED = re.compile(
    r"(?i)\s*what\s+(?:is|are)\s+(?:an?\s+|the\s+)?(?P<t>[A-Za-z][\w.\-]*(?:\s+[A-Za-z][\w\-]*){0,2})\s*\??\s*"
)
# a Latin name and, after it, at most a few Chinese characters ("ZeRO 优化", "CAP 理论")
_LATIN_THEN_CJK = re.compile(rf"(?P<latin>[A-Za-z][A-Za-z0-9.]*)\s*(?P<cjk>[{CJK_CHARS}]{{0,4}})")
# a Latin name typed in a Chinese question, whole ("ZeRO", "zero-shot", "GPT-2"), and the Chinese after it
_TYPED_LATIN = re.compile(rf"(?<![A-Za-z0-9.\-])(?P<latin>[A-Za-z][A-Za-z0-9.]*(?:-[A-Za-z0-9.]+)*)\s*(?P<cjk>[{CJK_CHARS}]{{0,4}})")
MIN_INSIDE_NAME = 3
# a question asking which things there are, which a list of bare names answers ("有哪些办法？", "分为哪几类？")
_NAMES_ASKED = re.compile(r"哪些|哪几|哪[两二三四五六七八九十]|分为|分成|包括|包含|列举|\bwhich\b|\blist\b", re.I)
FIGURE_MARGIN = 2.5  # logit units: sentences this close to the best are what an answer quotes besides it


def refusal_rule(
    question: str,
    profile: QuestionProfile,
    candidates: Sequence[Candidate],
    sentences: Sequence[Sequence[Sentence]],
    gate_features: Mapping[str, float],
    name_forms: Mapping[str, Sequence[str]] | None = None,
    headings: Sequence[str] = (),
    naming: Collection[int] | None = None,
    phrase_forms: Mapping[str, Sequence[str]] | None = None,
    names_nothing: bool = False,
) -> str:
    """Why the question must be refused whatever the reader's probability, or "" when nothing rules it out.
    `name_forms`: every form that counts for each Latin name of the question, and for each Chinese name of an
    alias group it spells (their aliases); `headings`: each passage's normalized heading path; `naming`: the
    passages that name the question's subject names (`passages_naming`), when the caller has them already;
    `phrase_forms`: the Chinese names of an English question's phrases; `names_nothing`: the question names no
    subject, only what it asks ("有什么缺点？", "原理是什么？")."""
    if is_instruction(question):
        return "the input is an instruction to the assistant, not a question about the notes"
    if names_nothing:
        # outside a conversation (or one whose subject could not be found) "有什么缺点？" is about nothing: any
        # passage naming 缺点 would answer it
        return "the question names nothing it asks about"
    if gate_features.get("unknown_latin"):
        # a name the notes never spell ("GPT-5" in notes that stop at GPT4): what shares its other words is
        # about something else
        return "the question names a term that appears nowhere in the notes"
    if lacks_figure(question, profile, candidates, sentences):
        return "the question asks for a figure and no sentence the answer would quote states one"
    if candidates and YEAR_ASKED.search(question) and not _date_given(sentences):
        return "the question asks when and no sentence of the passages it is about gives a date"
    if candidates and SOURCE_ASKED.search(question) and not any(names_source(s.text) for s in _quoted(candidates, sentences)):
        return "the question asks who made it or where it was published, and no sentence read names a source"
    if candidates and DRAWBACK_NAMED.search(question) and not any(
        states_drawback(s.text) for s in _quoted(candidates, sentences)
    ):
        return "the question asks for a drawback and no sentence read states one"
    named = _named_only(question, candidates, name_forms or {}, headings)
    if named:
        return f"the notes only name {named} in a list or title; no sentence says anything about it"
    read = read_text(sentences, headings)
    unnamed = _unnamed_term(question, read, name_forms or {})
    if unnamed:
        return f"no passage read names {unnamed}, the term the question asks to define"
    inside = name_only_inside(question, read)
    if inside:
        return f"the notes read write {inside[0]} only inside other names ({inside[1]}), never on its own"
    glossed = _unnamed_gloss(question, read, name_forms or {})
    if glossed:
        return f"no passage read names {glossed}, the term the question gives in parentheses"
    sibling = _sibling_phrase(question, profile, candidates, read, phrase_forms or {})
    if sibling:
        return f"the passages read speak of {sibling[0]}, not of {sibling[1]}, what the question is about"
    unspelled = _unnamed_english_term(question, read, phrase_forms or {}, name_forms or {})
    if unspelled:
        return f"no passage read names {unspelled}, the term the question asks to define, nor a Chinese name for it"
    names = subject_names(question, profile, read)
    if naming is None and names:
        naming = passages_naming(names, name_forms or {}, sentences, headings)
    if candidates and names and not naming:
        written = re.search(re.escape(names[0]), question, re.I)  # as the question spells it ("GAN")
        return f"no passage read names {written.group(0) if written else names[0]}, what the question is about"
    names_asked = _NAMES_ASKED.search(question) is not None
    if candidates and names and naming and not any(c.passage in naming and _says(c, names_asked) for c in candidates):
        # "# Elasticsearch" over an outline of headings, or of bare names ("1. 倒排索引"), which answer only a
        # question asking for a list: the sentences read are all about something else
        written = re.search(re.escape(names[0]), question, re.I)
        return f"the notes name {written.group(0) if written else names[0]} only in headings, with no sentence under them"
    if (
        candidates
        and names
        and naming
        and not profile.no_chinese
        and candidates[0].passage not in naming
        and not candidates[0].features.get("subject_heading")
    ):
        # "GAN 的训练为什么不稳定？": the best sentence (bagging's 不稳定) comes from a passage that never names GAN,
        # under a heading that names nothing the question is about, and the passage that does name it rates far
        # below (`leading.NAMING_MARGIN`): it does not say what is asked. Under a heading of the question's other
        # subject the name is context ("numpy 的广播机制是什么？" is answered in the 广播 section), and an English
        # question's Latin name may be context too ("What is broadcasting in NumPy?").
        written = re.search(re.escape(names[0]), question, re.I)
        return f"what the notes say of {written.group(0) if written else names[0]} does not answer the question"
    return ""


def lacks_figure(
    question: str, profile: QuestionProfile, candidates: Sequence[Candidate], sentences: Sequence[Sequence[Sentence]]
) -> bool:
    """Whether the question insists on a quantity (多少, 多大, 取值范围…) and no sentence the answer would quote, from
    the best candidate's passage, states a figure (`_figure_stated`)."""
    return (
        bool(candidates)
        and "number" in must_state(question, profile.types)
        and MEASURE_ASKED.search(question) is not None
        and not _figure_stated(candidates, sentences, _latin_names(question), counts=bool(COUNT_ASKED.search(question)))
    )


def read_text(sentences: Sequence[Sequence[Sentence]], headings: Sequence[str]) -> str:
    """Everything the reader read, normalized: every sentence of the passages, then their headings."""
    return normalize(" ".join([*(s.text for group in sentences for s in group), *headings]))


def _unnamed_term(question: str, read: str, name_forms: Mapping[str, Sequence[str]]) -> str:
    """The Chinese term a definition question asks about ("什么是批归一化？", "梯度裁剪是什么？") when no passage
    read writes it, less the words that only name its kind ("剪枝方法" is 剪枝): whatever shares a part of it
    ("归一化", "梯度") is about something else. `read`: what was read (`read_text`). "" otherwise, and for any
    other question."""
    match = DEFINITION_ASKED.fullmatch(question.strip())
    term = (match.group("a") or match.group("b")) if match else ""
    if not term or not 3 <= len(term) <= 8 or not all(is_cjk(ch) for ch in term) or _NOT_ONE_TERM.search(term):
        return ""
    core = _KIND_WORDS.sub("", term)
    core = core if len(core) >= 2 else term
    compact = re.sub(r"\s+", "", read)
    # the alias group of the whole term, not of a part of it (归一化's group says nothing of 批归一化)
    forms = [*name_forms.get(term, ()), *name_forms.get(core, ())]
    return "" if written_form(core, compact) is not None or any(len(f) >= 2 and f in read for f in forms) else term


def name_only_inside(question: str, read: str) -> tuple[str, str] | None:
    """(name, a compound holding it) when a definition question asks about a Latin name ("什么是 ZeRO？", "What is
    ZeRO?", "什么是 ZeRO 优化？") that the passages read (`read`, normalized) write only as a word of a hyphenated
    name ("zero-shot") or inside a longer word ("ReZero"), never on its own nor as the question writes it; a
    version after a hyphen ("ChatGLM-6B", "GPT-2") is the name itself. None otherwise."""
    match = DEFINITION_ASKED.fullmatch(question.strip()) or _EN_DEFINITION_ASKED.fullmatch(question.strip())
    term = next((g for g in (match.groups() if match else ()) if g), "").strip()
    named = _LATIN_THEN_CJK.fullmatch(term)
    if named:
        return _only_inside(named.group("latin"), named.group("cjk") or "", read)
    if is_cjk(question):
        # any other question's names, written only in hyphenated names: a short name sits inside many a longer
        # word ("ai" in "openai"), which says nothing of it
        for typed in _TYPED_LATIN.finditer(question):
            if len(typed.group("latin")) >= MIN_INSIDE_NAME:
                inside = _only_inside(typed.group("latin"), typed.group("cjk") or "", read, within_words=False)
                if inside:
                    return inside
    return None


def _only_inside(latin: str, rest: str, read: str, *, within_words: bool = True) -> tuple[str, str] | None:
    """(`latin`, a compound holding it) when `read` writes the name only in hyphenated names ("zero-shot"), or,
    `within_words`, inside a longer word ("rezero"); None when it writes it alone, with its version, or as
    `latin` + `rest` (the Chinese after it in the question: "cap理论")."""
    name = normalize(latin)
    if rest and name + rest in re.sub(r"\s+", "", read):
        return None  # "cap理论", as the question writes it
    compounds = []
    for found in re.finditer(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9])", read):
        before, after = read[max(0, found.start() - 12) : found.start()], read[found.end() : found.end() + 12]
        if word := re.match(r"-[a-z]{2,}", after):
            compounds.append(name + word.group(0))  # "zero-shot"
        elif word := re.search(r"[a-z]{2,}-$", before):
            compounds.append(word.group(0) + name)  # "self-attention"
        else:
            return None  # on its own, or with its version ("gpt-2")
    if not compounds and within_words and (inside := re.search(rf"[a-z]+{re.escape(name)}[a-z]*|{re.escape(name)}[a-z]+", read)):
        compounds.append(inside.group(0))  # "rezero"
    return (latin, compounds[0]) if compounds else None


def _unnamed_gloss(question: str, read: str, name_forms: Mapping[str, Sequence[str]]) -> str:
    """A term the question gives in parentheses, naming what it asks about ("……相似的样本（模式崩溃）", "梯度累积
    （gradient accumulation）"), when no passage read writes it (`read`), nor the Chinese term it glosses. ""
    otherwise."""
    compact = re.sub(r"\s+", "", read)
    for match in GLOSS.finditer(question):
        term = normalize(match.group("term")).strip()
        glossed = "" if is_cjk(term) else glossed_run(question, match)
        forms = [*name_forms.get(term, ()), *name_forms.get(glossed, ())]
        spelled = written_form(term, compact) if is_cjk(term) else spelled_as_one(term.split()).search(read)
        named = (
            spelled is not None
            or (glossed and written_form(glossed, compact) is not None)
            or any(len(f) >= 2 and f in read for f in forms)
        )
        if not named:
            return match.group("term").strip()
    return ""


def _unnamed_english_term(
    question: str, read: str, phrase_forms: Mapping[str, Sequence[str]], name_forms: Mapping[str, Sequence[str]]
) -> str:
    """The English term of two or three words a definition question asks about ("What is gradient clipping?")
    when no passage read (`read`) spells it and neither the glossary nor the bridge gave it a Chinese name that
    they write; "" otherwise."""
    match = _EN_DEFINITION_ASKED.fullmatch(question.strip())
    term = normalize(match.group("t")) if match else ""
    words = term.split()
    if len(words) < 2 or any(w in STOPWORDS for w in words) or spelled_as_one(words).search(read):
        return ""  # "broadcasting in NumPy", "disadvantages of ReLU": a question about a name, not one name
    if singular(words[-1]) in KIND_WORDS and spelled_as_one(words[:-1]).search(read):
        return ""  # "sigmoid function": the notes' sigmoid, whatever word they use for its kind (函数)
    if len(words) == 2 and "-" in words[0] and spelled_as_one(words[:1]).search(read):
        return ""  # "out-of-vocabulary word", "zero-shot learning": the hyphenated name is what it is about
    forms = [*phrase_forms.get(term, ()), *(f for w in words for f in name_forms.get(w, ()) if is_cjk(f))]
    return "" if any(form in read for form in forms) else match.group("t")


def _sibling_phrase(
    question: str,
    profile: QuestionProfile,
    candidates: Sequence[Candidate],
    read: str,
    phrase_forms: Mapping[str, Sequence[str]],
) -> tuple[str, str] | None:
    """(sibling, name) when an English question is about a two-word name ("batch normalization") that no passage
    read (`read`) spells, nor a Chinese name of it, and the best sentence is about a sibling, another name with
    the same last word that the question does not name ("layer normalization"); None otherwise."""
    if not profile.no_chinese or not candidates:
        return None
    text = normalize(question)
    words = _LATIN_NAME.findall(text)
    best = candidates[0].sentence
    around = normalize(f"{best.text} {best.heading}")
    for i, (first, last) in enumerate(zip(words, words[1:], strict=False)):
        phrase = f"{first} {last}"
        if (
            (i > 0 and words[i - 1] not in _OPENS_NOUN_PHRASE)  # "need warmup" of "…rate need warmup" is no name
            or first in STOPWORDS
            or last in STOPWORDS
            or first not in profile.subject
            or last not in profile.subject
            or phrase not in text
            or spelled_as_one([first, last]).search(read)
            or any(form in read for form in phrase_forms.get(phrase, ()))
        ):
            continue
        for match in re.finditer(rf"\b([a-z][a-z0-9]*)\s+{re.escape(last)}\b", around):
            sibling = f"{match.group(1)} {last}"
            if match.group(1) != first and match.group(1) not in STOPWORDS and sibling not in text:
                return sibling, phrase
    return None


def _says(c: Candidate, names_asked: bool) -> bool:
    """Whether a candidate says something the question may ask: a statement, or any line when it asks which
    things there are (`names_asked`: "讲了哪些内容？", "分为哪几类？"), which bare names answer."""
    return names_asked or states_something(c.sentence.text, c.features)


def subject_names(question: str, profile: QuestionProfile, known: str = "") -> list[str]:
    """The Latin-letter names the question is about ("ddpg", "focal loss"): of at least NAMED_MIN_CHARS
    characters, and among its subject words, or for a name of several words, one of them ("II" of "Type II"
    is no name); not a gloss in parentheses of a Chinese term `known` (the passages read) writes."""
    return [
        name
        for name in latin_names(without_glosses(question, normalize(known)) if known else question)
        if len(name) >= NAMED_MIN_CHARS
        and (name in profile.subject or (" " in name and any(w in profile.subject for w in name.split())))
    ]


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s\-]+", name) if w]


def passages_naming(
    names: Sequence[str],
    name_forms: Mapping[str, Sequence[str]],
    sentences: Sequence[Sequence[Sentence]],
    headings: Sequence[str],
) -> set[int]:
    """The passages that spell one of `names`, or one of its forms (aliases), in a sentence or a heading; a
    name of several words also where the passage writes each of them ("lora rank": the LoRA section's "rank")."""
    spellings = [
        # words apart, not the parts of one hyphenated name ("gpt-5" is not "gpt" and a "5" elsewhere)
        (spelled_as_one(_words(name)), [f for f in name_forms.get(name, ()) if len(f) >= 2 and f != name], name.split())
        for name in names
    ]
    naming = set()
    for i, group in enumerate(sentences):
        text = normalize(" ".join(s.text for s in group)) + " " + (headings[i] if i < len(headings) else "")
        if any(
            spelling.search(text) or any(f in text for f in forms) or (len(words) > 1 and written_together(words, [text]))
            for spelling, forms, words in spellings
        ):
            naming.add(i)
    return naming


def _named_only(
    question: str,
    candidates: Sequence[Candidate],
    name_forms: Mapping[str, Sequence[str]],
    headings: Sequence[str],
) -> str:
    """A name in Latin letters the question spells, when the candidates name it only in lines that state
    nothing (a table of contents' "12. GroupNorm、LayerNorm、BatchNorm", a title, a link) and no heading names it
    in any of its forms: the notes list the name but say nothing about it. "" otherwise."""
    # a heading over nothing but a link ("# stable-diffusion 原理" and its URL) says nothing either
    said = {c.passage for c in candidates}
    titles = " ".join([*(h for i, h in enumerate(headings) if i in said), *(normalize(c.sentence.heading) for c in candidates)])
    # any name the question spells counts here, not only its subject: "ControlNet 是怎么把…加进 Stable Diffusion
    # 的？" is about ControlNet, though its rarest words are 人体 and 姿态, which the notes never use
    for name in [n for n in latin_names(question) if len(n) >= NAMED_MIN_CHARS]:
        spelling = spelled_as_one(_words(name))
        forms = [f for f in name_forms.get(name, ()) if len(f) >= 2 and f != name]
        if spelling.search(titles) or any(f in titles for f in forms):
            continue
        mentions = [c for c in candidates if spelling.search(normalize(c.sentence.text))]
        if mentions and all(_only_lists(c, spelling) for c in mentions):
            written = re.search(re.escape(name), question, re.I)  # as the question spells it ("BatchNorm")
            return written.group(0) if written else name
    return ""


def _only_lists(c: Candidate, spelling: re.Pattern[str]) -> bool:
    """Whether a candidate names a thing without saying anything about it: a line of names or a link, or a short
    title in which the name stands as one item ("7. Adam、adamw"; not "误报 (Type I error)")."""
    if c.features.get("enumeration") or c.features.get("link"):
        return True
    items = (normalize(item).strip() for item in _ITEM_SPLIT.split(ITEM_NUMBER.sub("", c.sentence.text)))
    if c.features.get("title_like") and any(spelling.fullmatch(item) for item in items):
        return True
    # an example of something else, and nothing more: "包含各种优化算法,如Adam、RMSProp等" says nothing of Adam
    text = normalize(c.sentence.text)
    examples = [m.group(1) for m in _EXAMPLES.finditer(text)]
    rest = _EXAMPLES.sub(" ", text)
    return any(
        any(spelling.fullmatch(item.strip(" .")) for item in _ITEM_SPLIT.split(group)) for group in examples
    ) and not spelling.search(rest)


def _figure_stated(
    candidates: Sequence[Candidate],
    sentences: Sequence[Sequence[Sentence]],
    names: Sequence[str] = (),
    *,
    counts: bool = True,
) -> bool:
    """Whether a sentence an answer would quote states a number: the best sentence, the one after it, or
    another of its passage the reader rates within FIGURE_MARGIN of it; unless the question `counts` things, a
    count in words ("两个主要部分") is no such number. When the question names things in Latin
    letters ("GPT-4 有多少参数？"), the figure's sentence, its neighbours or its heading must name one of them: a
    count of GPTQ's parameters is not GPT-4's."""
    if not candidates:
        return False
    group = sentences[candidates[0].passage]
    spellings = [spelled_as_one(_words(name)) for name in names]
    for s in _quoted(candidates, sentences):
        text = ITEM_NUMBER.sub("", s.text)  # "6、交叉检验……": a list's numbering is no figure
        if not (states(text, "number") if counts else states_quantity(text)):
            continue
        around = normalize(" ".join(x.text for x in group[max(0, s.pos - 1) : s.pos + 2]) + " " + s.heading)
        if not spellings or any(spelling.search(around) for spelling in spellings):
            return True
    return False


def _date_given(sentences: Sequence[Sequence[Sentence]]) -> bool:
    """Whether a sentence of the passages read gives a date."""
    return any(DATE.search(s.text) for group in sentences for s in group)


def _quoted(candidates: Sequence[Candidate], sentences: Sequence[Sequence[Sentence]]) -> list[Sentence]:
    """What an answer would quote: the best sentence, the one after it, and the others of its passage the reader
    rates within FIGURE_MARGIN of it."""
    best = candidates[0]
    group = sentences[best.passage]
    quoted = [c.sentence for c in candidates if c.passage == best.passage and c.score >= best.score - FIGURE_MARGIN]
    return quoted + list(group[best.sentence.pos + 1 : best.sentence.pos + 2])


def _latin_names(question: str) -> list[str]:
    """The Latin-letter names of a Chinese question ("gpt-4", "batch"); none for an English one."""
    text = normalize(question)
    return [] if not is_cjk(question) else [w for w in _LATIN_NAME.findall(text) if len(w) >= 2]
