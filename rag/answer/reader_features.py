"""Features of the reader: does this sentence answer this question? Pure functions over text and numbers.

A question is profiled once (its weighted terms, the answer types it asks for, its subject); every candidate
sentence of the top passages then gets a vector of general features: term coverage (IDF-weighted, aliases and
bridged terms counted, in the sentence, with its heading, in a window of neighbours, and weighted by how rare
the term is among the candidates), dense similarity of heading plus sentence to the question, the passage's
rank and fused score, the sentence's position and form, and whether it holds the asked answer type. Nothing
here is tied to a question of an evaluation set: the cue patterns below describe kinds of questions and
answers in general.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rag.answer.sentence_form import (
    LEAD_IN,
    PARENTHESES,
    SENTENCE_PUNCT,
    TITLE_CHARS,
    is_enumeration,
    is_link,
)
from rag.text import CJK_CHARS, char_bigrams, is_cjk, normalize

# A question that asks for a year ("LoRA 是哪一年提出的？", "When was BERT released?"; not "什么时候用 dropout？" or
# "When is a product defined?"), which `rag.answer.reader` requires the passages to give.
YEAR_ASKED = re.compile(
    r"哪一?年|何年|(?:什么时候|何时)(?:被|由[^，,？?]{0,12})?(?:提出|发布|发表|出现|诞生|推出|开源|发明)"
    r"|\b(?:what|which) year\b|\bwhen (?:was|were|did)\b",
    re.I,
)

# What a question asks for, and the cues that a sentence holds that kind of answer.
QUESTION_TYPES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.I)
    for name, pattern in {
        "formula": r"公式|怎么算|如何计算|计算方法|怎么计算|估算|怎么求|如何求|表达式|formula|equation|calculat|comput|estimat",
        "number": r"多少|几个|几种|几层|几维|几位|几倍|范围|取值|数值|比例|大小|how many|how much|range|value|number of|size",
        "cause": r"为什么|为何|原因|怎么会|导致|why|cause|reason",
        "definition": r"什么是|是什么|指什么|什么意思|含义|定义|是啥|what is|what are|what does|mean|defin",
        "list": r"哪些|哪几|有什么|包括|包含|分为|分成|种类|类型|步骤|[两二三四五六七八九十几多]\s*(?:个|种|类|步|项|点|部分|阶段|方面|大)"
        r"|which|what are|kinds|types|steps|list|(?:two|three|four|five) ",
        "drawback": r"缺点|不足|劣势|局限|问题|弊端|坏处|缺陷|disadvantage|drawback|downside|limitation|problem|weakness",
        "advantage": r"优点|优势|好处|作用|用处|意义|advantage|benefit|why use|purpose",
        "compare": r"区别|不同|差异|比较|对比|相比|和.*比|vs|versus|differ(?!entia)|compare|comparison",
        "how": r"怎么|如何|怎样|方法|how",
        "effect": r"会怎样|会如何|会怎么样|什么影响|影响|变化|变大|变小|增大|减小|太大|太小|过大|过小|"
        r"what happens|effect|impact|too (?:large|high|small|low)",
    }.items()
}
SENTENCE_TYPES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern, re.I)
    for name, pattern in {
        "formula": r"=|≈|∑|Σ|√|\^|\\frac|\\sum|log\(|exp\(|×|÷",
        "number": r"\d",
        "cause": r"因为|由于|所以|导致|因此|使得|造成|原因|从而|以免|避免|because|due to|therefore|thus|so that",
        "definition": r"是指|指的是|是一种|是一个|称为|又称|又叫|叫做|定义为|就是|即(?![可使便将时刻])|refers to|is a|is an|means",
        "list": r"^(?:\d{1,2}\s*[、.．)）]|[（(]\d{1,2}[)）]|[①-⑳])|[：:]$|包括|分为|有以下|如下",
        # a shortcoming denied is none ("不再局限于 Embedding 层", "没有问题")
        "drawback": r"(?<![不没无非])(?<!不再)(?<!并不)(?<!没有)(?:缺点|不足|劣势|局限|问题|缺陷)|难以|无法|容易|不能|代价|开销|慢|消耗"
        r"|disadvantage|drawback|cannot|costly",
        "advantage": r"优点|优势|好处|能够|可以|提高|提升|减少|降低|加快|有效|advantage|benefit|improv",
        "compare": r"而|相比|不同|区别|比|更|而是|则|whereas|while|unlike|than",
        "how": r"通过|使用|采用|利用|首先|然后|步骤|方法|by |using",
        # a consequence or a trend, not any 会 / 可能 ("可能带来模型的不稳定", "随着T的增加……越来越平缓")
        "effect": r"随着|越来越|越[^，,。；;]{1,8}越|变得|导致|造成|引起|带来|使得|产生|出现"
        r"|increase|decrease|become|lead to|result in",
    }.items()
}
def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regular expression's source ("缺点|不足|(?:a|b)c" -> 缺点, 不足, (?:a|b)c)."""
    out, depth, current = [], 0, ""
    for ch in pattern:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "|" and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    return [*out, current]


_HOW_WORDS = ("怎么", "如何", "怎样")


def _type_words() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """English cue word -> the answer type it asks for, and type -> the Chinese words of its cues (QUESTION_TYPES)."""
    english: dict[str, str] = {}
    chinese: dict[str, tuple[str, ...]] = {}
    for name, pattern in QUESTION_TYPES.items():
        parts = _alternatives(pattern.pattern)
        # a cue may exclude a longer word ("differ(?!entia)": "automatic differentiation" compares nothing)
        cues = (re.fullmatch(r"([a-z]{4,})(?:\(\?![a-z]+\))?", part) for part in parts)
        english.update({cue.group(1): name for cue in cues if cue})
        words = [part for part in parts if re.fullmatch(f"[{CJK_CHARS}]{{2,}}", part)]
        # the verb a how-question asks about is said plainly in the notes ("如何计算" asked, "计算" written)
        verbs = [w[2:] for w in words if w[:2] in _HOW_WORDS and len(w) >= 4]
        chinese[name] = tuple(dict.fromkeys(words + verbs))
    return english, chinese


_ENGLISH_CUES, _CHINESE_CUES = _type_words()


def _named_type(word: str) -> str | None:
    """The answer type an English question word asks for, by its longest cue ("disadvantages": drawback), or None."""
    word = word.lower()
    cues = [cue for cue in _ENGLISH_CUES if word.startswith(cue) and QUESTION_TYPES[_ENGLISH_CUES[cue]].search(word)]
    return _ENGLISH_CUES[max(cues, key=len)] if cues else None


def attribute_translations(word: str) -> tuple[str, ...]:
    """The Chinese words for what an English question word asks of its topic, by the answer type it names
    ("disadvantages" -> 缺点, 不足, 劣势…); () for a word that names no type."""
    named = _named_type(word)
    return _CHINESE_CUES[named] if named else ()


# The answer types whose Chinese words the notes use as section names ("## 不足", "优点：", "区别") and which an
# English question's attribute word may therefore be searched by; the others ("什么是", "哪些", "怎么") are how a
# question asks, not what a note says.
SEARCHED_ATTRIBUTES = ("drawback", "advantage", "compare")


def searched_attribute_names(word: str) -> tuple[str, ...]:
    """The Chinese names an English attribute word is searched by ("limitations" -> 缺点, 不足, 局限…), or ()."""
    return attribute_translations(word) if _named_type(word) in SEARCHED_ATTRIBUTES else ()


# A figure the question insists on, which the answer must state or say the notes do not give. Stricter than
# the "number" type: 几 + a measure word asks for a count unless it is a determiner (哪几/好几/这几/少数几:
# "which", "several", "these few") or opens a noun phrase ("我把几个基础模型的预测结果……"), and 大小 / size
# name a quantity rather than ask for one ("batch 大小为什么取 2 的次方").
FIGURE_ASKED = re.compile(
    r"(?<![或])多少|(?<![哪好这那前后])(?<!少数)几(?:个|种|层|维|位|倍|次|月|天|年|分钟|小时|步|轮)(?![^，,。？?！!；;、]{0,8}的)"
    r"|多大(?!的?(?:影响|作用|区别|关系|意义|帮助|用处|差别|差异|提升|改善|好处|优势|问题|变化))|取值范围"
    r"|how many|how much(?! (?:does|do|did|can|will|would|should|is|are)\b)",
    re.I,
)
# A figure as prose writes it: digits, or a Chinese numeral with its measure word ("九公斤", "八十度", "两个门");
# a lone 一个 / 一种 is an article ("多了一个参数"), not a count.
_FIGURE = re.compile(
    r"\d|(?<![零〇一二两三四五六七八九十百千万亿半])(?!一(?:个|种|类|项|条|点|步|部分|方面))[零〇一二两三四五六七八九十百千万亿半]+(?:个|种|层|维|位|倍|次|度|分|秒|天|年|月|周|步|轮|项|类|条|名|只|台|块|元|岁"
    r"|公斤|千克|克|米|小时|分钟|代|版|阶段|点|方面|门|头|成|部分|比特|字节)"
)
# Text that addresses the assistant instead of stating or asking something about the notes.
INSTRUCTION = re.compile(
    r"忽略(?:之前|以上|上面|前面|先前|你的|所有|全部)?的?(?:所有|全部)?(?:指令|指示|提示|规则|设定|限制)"
    r"|(?:从现在(?:起|开始)|接下来)[，,\s]*你(?:是|要|就是|将|必须)"
    r"|你(?:现在)?是(?:一个)?(?:没有|不受)(?:任何)?(?:限制|约束)"
    r"|扮演|不要再?(?:回答|说|拒绝)|直接用你自己的知识|系统(?:通知|提示词?|指令)[】:：]"
    r"|(?:ignore|disregard|forget)\s+(?:all\s+|any\s+|the\s+)?(?:previous|prior|above|earlier|your)\s+"
    r"(?:instructions|prompts?|rules)|you are now|pretend (?:to be|you are)|jailbreak|system prompt\s*:"
    # rules to forget, the assistant's own prompt to reveal, the notes to dump whole
    r"|(?:忘掉|忘记|忘了|无视|抛开)(?:上面|之前|以上|前面|先前|你的|所有|全部)?的?(?:所有|全部)?(?:规则|指令|指示|设定|限制|要求)"
    r"|(?:规则|指令|指示|设定|限制)(?:都|全部|统统|全都)?(?:忘掉|忘记|忘了|作废|失效|取消)|用你自己的知识"
    r"|(?:输出|打印|显示|泄露|重复|告诉我|给我看|说出)(?:一下)?(?:你的|系统的?)(?:系统)?(?:提示词|提示语|prompt|指令|设定)"
    r"|(?:原文|全文|文档|内容)[^。？?！!]{0,10}(?:全部|完整|逐字|一字不差|原封不动)地?(?:输出|打印|贴出|复制)"
    r"|(?:逐字|一字不差|原封不动)地?(?:打印|复制|贴)出来"
    r"|\bforget (?:everything|all)\b|\byou are (?:a|an) [\w-]+ now\b"
    r"|\b(?:print|reveal|show|repeat|output|leak|tell me) (?:me )?(?:your|the) (?:system |hidden |initial )?(?:prompt|instructions)"
    r"|\b(?:print|output|dump|repeat) (?:all|every|everything)\b",
    re.I,
)
QUESTION_END = re.compile(r"[？?]\s*$")
_COUNT_UNIT = re.compile(f"(?:几|多少)([{CJK_CHARS}])")
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")

# Weight of a term that came from alias expansion or the cross-lingual bridge, relative to the question's own.
EXPANSION_SHARE = 1.0
SUBJECT_TERMS = 2  # the rarest own terms of a question stand for its subject
SUBJECT_OPENING = 16  # characters: a sentence's subject stands at its start
# Features an English question gets its own copy of ("en_<name>", 0 for other questions): it reads Chinese notes
# through bridged terms and cross-lingual vectors, where the same figure means something else.
ENGLISH_SPECIFIC = ("dense_gap", "cover", "cover_window", "rank_inverse", "position", "predicate")


@dataclass(frozen=True)
class QuestionProfile:
    """What the reader knows about a question before it reads any sentence."""

    text: str
    words: dict[str, float]  # the question's own words, IDF-weighted
    expansions: dict[str, float]  # alias / bridged names' tokens, weighted by expansion weight x IDF
    tokens: frozenset[str]  # search-mode tokens of the question (for rarity among candidates)
    grams: frozenset[str]  # character bigrams / Latin terms of the question
    types: frozenset[str]  # answer types asked for
    subject: dict[str, float]  # the rarest own words
    count_units: tuple[str, ...]  # "几位" -> ("位",): a number with this unit answers
    english: bool  # mostly Latin letters (Chinese questions naming several Latin terms count)
    no_chinese: bool  # not one Chinese character: it reaches the notes only through translation
    # the Chinese words of the English attribute words the notes never use ("computed": 计算, 公式…), which
    # count for the asked predicate when judging whether anything answers (`rag.answer.reader`)
    attribute_words: Mapping[str, float] = field(default_factory=dict)

    @property
    def all_terms(self) -> dict[str, float]:
        return {**self.expansions, **self.words}


# "X 解决了什么问题" / "what problem does X solve" asks what X is for: the problem is not X's drawback.
_PROBLEM_SOLVED = re.compile(
    r"(?:解决|应对|处理|缓解|针对)了?(?:什么|哪些|哪个|哪类|哪种|啥)(?:样的)?问题|what problems? (?:does|do|did) .+ (?:solve|address)"
    r"|(?:solves?|address(?:es)?) what problems?",
    re.I,
)
DRAWBACK_NAMED = re.compile(r"缺点|不足|劣势|局限|弊端|坏处|缺陷|disadvantage|drawback|downside|limitation|weakness", re.I)


def question_types(text: str) -> frozenset[str]:
    """The answer types a question asks for (formula, number, cause, definition, list, ...)."""
    types = {name for name, pattern in QUESTION_TYPES.items() if pattern.search(text)}
    if _PROBLEM_SOLVED.search(text) and not DRAWBACK_NAMED.search(text):
        types = (types - {"drawback"}) | {"advantage"}
    return frozenset(types)


def must_state(question: str, types: frozenset[str] | None = None) -> tuple[str, ...]:
    """The answer types an answer must hold, or else say the notes do not give: a formula asked for, or a
    figure the question insists on (`FIGURE_ASKED`). `types`: the question's `question_types`, if known."""
    types = question_types(question) if types is None else types
    # a figure asked for counts whatever the broader "number" type says ("ε 一般设多大" asks for one; that type
    # reads 大小 as a quantity named, so it leaves out 多大)
    formula = "formula" in types
    figure = FIGURE_ASKED.search(question) is not None
    return tuple(t for t, asked in (("formula", formula), ("number", figure)) if asked)


def sentence_types(text: str) -> frozenset[str]:
    """The answer types a sentence holds, by surface cues; a figure in Chinese numerals ("八十度") is a number."""
    types = {name for name, pattern in SENTENCE_TYPES.items() if pattern.search(text)}
    if "number" not in types and _FIGURE.search(text):
        types.add("number")
    return frozenset(types)


# A problem solved is no shortcoming ("解决数据稀疏的情况下，特征怎样组合的问题", "很好解决这个问题")
_PROBLEM_ADDRESSED = re.compile(r"(?:解决|缓解|处理|应对|避免|克服)[^。；;]{0,24}问题")


# What goes wrong, besides the drawback type's cues: "可能带来模型的不稳定(振荡)", "越小越不稳定"
_GOES_WRONG = re.compile(r"不稳定|振荡|震荡|过拟合|欠拟合|丢失|浪费|困难|较差|变差|不佳|不好")


def states_drawback(text: str) -> bool:
    """Whether a sentence states a shortcoming (the "drawback" sentence type, or something going wrong), a
    problem it solves aside."""
    text = _PROBLEM_ADDRESSED.sub(" ", text)
    return SENTENCE_TYPES["drawback"].search(text) is not None or _GOES_WRONG.search(text) is not None


# Measure words that count things ("两个主要部分", "三种方法"): a count, not the quantity "从多少增加到多少" asks for
_COUNTED = re.compile(r"[零〇一二两三四五六七八九十百千万亿半]+(?:个|种|类|项|条|部分|方面|点|步|阶段|名|只|台|块)")


def states_quantity(text: str) -> bool:
    """Whether `text` gives a quantity: a figure in digits, or in Chinese numerals with a unit that does not
    count things ("八十度", "两倍"; not "这两个过程" or "分为三个部分")."""
    return any(not _COUNTED.fullmatch(m.group()) for m in _FIGURE.finditer(text))  # a digit is never a count


def states(text: str, kind: str) -> bool:
    """Whether `text` gives what `must_state` asks for: a figure (in digits or Chinese numerals) or a formula."""
    return _FIGURE.search(text) is not None if kind == "number" else kind in sentence_types(text)


def is_instruction(text: str) -> bool:
    """Text that tells the assistant what to do ("忽略之前的所有指令……") rather than asking about the notes."""
    return INSTRUCTION.search(text) is not None


def mostly_latin(text: str) -> bool:
    letters = _LETTER.findall(text)
    return bool(letters) and sum(1 for c in letters if _LATIN.match(c)) / len(letters) > 0.5


def profile_question(
    text: str,
    words: Mapping[str, float],
    expansions: Mapping[str, float],
    tokens: Sequence[str],
) -> QuestionProfile:
    """Profile a question from its IDF-weighted words, its expansion tokens and its search tokens."""
    own = {normalize(w): float(v) for w, v in words.items()}
    extra = {normalize(t): float(v) for t, v in expansions.items() if normalize(t) not in own}
    # the subject: the rarest own words that are not the asked attribute (缺点, 公式, 区别 ...)
    named = {w: v for w, v in own.items() if not any(p.search(w) for p in QUESTION_TYPES.values())}
    subject = dict(sorted(named.items(), key=lambda item: -item[1])[:SUBJECT_TERMS])
    return QuestionProfile(
        text=text,
        words=own,
        expansions=extra,
        tokens=frozenset(normalize(t) for t in tokens),
        grams=frozenset(char_bigrams(text)),
        types=question_types(text),
        subject=subject,
        count_units=tuple(dict.fromkeys(_COUNT_UNIT.findall(text))),
        english=mostly_latin(text),
        no_chinese=not is_cjk(text),
    )


def coverage(text: str, weights: Mapping[str, float], extra: Mapping[str, float] | None = None) -> float:
    """IDF-weighted share of `weights`' terms found in `text` (normalized); `extra` terms (aliases, bridged
    names) found there count towards the same total, so an alias can stand in for the word it translates."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    found = sum(w for term, w in weights.items() if term in text)
    if extra:
        found += EXPANSION_SHARE * sum(w for term, w in extra.items() if term in text)
    return min(1.0, found / total)


# A degree of an adjective ("太大", "过小") and the other ways notes say it ("较大", "偏小", "很大").
DEGREE_FORMS = ("太", "过", "较", "偏", "很", "更")
_DEGREE = re.compile(rf"(?:{'|'.join(DEGREE_FORMS)})([大小高低多少快慢长短深浅])")


def degree_variants(words: Mapping[str, float]) -> dict[str, float]:
    """Every way of saying a degree the question asks, at the asked word's weight: "太大" asked, "较大的学习率"
    written."""
    out: dict[str, float] = {}
    for word, weight in words.items():
        degree = _DEGREE.fullmatch(word)
        if degree:
            for form in DEGREE_FORMS:
                out.setdefault(form + degree.group(1), weight)
    return out


# 即 as "namely", not 即可 ("and that is all"), 即使 / 即便 ("even if"), 即将, 即时; 是 not negated (不是, 并非是)
# nor asking (是否)
_DEFINED = r".{0,12}?(?:(?<![不非])是(?!否)|指|就是|即(?![可使便将时刻])|称为|可以看做|可以看作|refers to|is a|is an|means)"


def defined_share(text: str, subject: Mapping[str, float]) -> float:
    """Share of the subject's weight whose term the sentence goes on to define or describe ("X 是…", "X 的思想，就是…")."""
    total = sum(subject.values())
    if total <= 0:
        return 0.0
    # a gloss in parentheses sits between the term and its definition: "长度外推性（Length Extrapolation）是指…"
    text = PARENTHESES.sub("", text)
    return sum(w for t, w in subject.items() if re.search(re.escape(t) + _DEFINED, text)) / total


def rarity_weights(terms: Sequence[str], texts: Sequence[str]) -> dict[str, float]:
    """Local IDF of each term among the candidate texts: a term in every sentence (the subject) says little
    about which sentence answers."""
    n = len(texts)
    return {t: math.log(1.0 + (n + 1) / (sum(1 for x in texts if t in x) + 0.5)) for t in dict.fromkeys(terms)}


def share(text: str, weights: Mapping[str, float]) -> float:
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in text) / total if total > 0 else 0.0


@dataclass(frozen=True)
class CandidateContext:
    """A candidate sentence with what surrounds it, all text normalized."""

    text: str  # the sentence as written (for form features)
    norm: str  # normalized sentence
    heading: str  # normalized heading path + nearest heading
    window: str  # normalized previous + this + next sentence
    previous: str  # the previous sentence as written ("" at the start)
    kind: str  # sentence kind from rag.answer.sentences
    bullet: bool
    previous_bullet: bool
    position: int  # index among the passage's sentences
    passage_sentences: int
    passage_rank: int  # 1-based
    fused_relative: float  # passage score / best passage score
    passage_coverage_gap: float  # passage coverage minus the best passage's coverage (<= 0)
    dense: float  # similarity of "heading：sentence" to the question (best of question and translation)
    dense_gap: float  # dense minus the best candidate's dense (<= 0)
    passage_dense_gap: float  # the passage's best dense minus the best candidate's dense (<= 0)


def candidate_features(
    q: QuestionProfile,
    c: CandidateContext,
    local: Mapping[str, float],
    local_grams: Mapping[str, float],
    predicate: Mapping[str, float],
) -> dict[str, float]:
    """The reader's features of one candidate sentence (names are the keys of the fitted weights)."""
    types = sentence_types(c.text)
    with_heading = f"{c.norm} {c.heading}"
    lead_in = bool(LEAD_IN.search(c.text))
    first_item = c.bullet and not c.previous_bullet
    f: dict[str, float] = {
        "cover": coverage(c.norm, q.words, q.expansions),
        "cover_heading": coverage(with_heading, q.words, q.expansions),
        "cover_window": coverage(f"{c.window} {c.heading}", q.words, q.expansions),
        "heading_only": coverage(c.heading, q.words, q.expansions),
        "local": share(c.norm, local),
        "local_window": share(c.window, local),
        "local_grams": share(c.norm, local_grams),
        "predicate": coverage(c.norm, predicate, q.attribute_words) if predicate else 0.0,
        "subject_heading": coverage(c.heading, q.subject) if q.subject else 0.0,
        "subject_opening": coverage(c.norm[:SUBJECT_OPENING], q.subject) if q.subject else 0.0,
        "subject_window": coverage(f"{c.window} {c.heading}", q.subject) if q.subject else 0.0,
        "subject_defined": defined_share(c.norm, q.subject),
        "grams": len(q.grams & char_bigrams(c.text)) / len(q.grams) if q.grams else 0.0,
        "dense": c.dense,
        "dense_gap": c.dense_gap,
        "passage_dense_gap": c.passage_dense_gap,
        "rank_inverse": 1.0 / c.passage_rank,
        "rank_first": float(c.passage_rank == 1),
        "fused_relative": c.fused_relative,
        "passage_coverage_gap": c.passage_coverage_gap,
        "position": c.position / max(1, c.passage_sentences),
        "opening": float(c.position <= 1),
        "lead_in": float(lead_in),
        "after_lead_in": float(bool(c.previous and LEAD_IN.search(c.previous))),
        "list_item": float(c.bullet),
        "code": float(c.kind == "code"),
        "short": float(c.kind == "short"),
        "length": min(1.0, len(c.text) / 120),
        "question_like": float(bool(QUESTION_END.search(c.text))),
        "instruction": float(is_instruction(c.text)),
        "title_like": float(len(c.text) <= TITLE_CHARS and not SENTENCE_PUNCT.search(c.text)),
        "enumeration": float(is_enumeration(c.text)),
        "link": float(is_link(c.text)),
    }
    for name in QUESTION_TYPES:
        f[f"type_{name}"] = float(name in q.types and name in types)
    # what follows from something is read as its cause is: the labelled questions ask "why" far more than "what happens"
    f["type_cause"] = max(f["type_cause"], f.pop("type_effect"))
    # the asked kind of answer among the question's words: a formula of another thing answers nothing
    f["type_near_terms"] = max(f[f"type_{name}"] for name in QUESTION_TYPES if name != "effect") * f["cover_window"]
    asks_list = "list" in q.types
    f["list_lead_in"] = float(asks_list and lead_in)
    f["list_first_item"] = float(asks_list and first_item)
    f["formula_code"] = float("formula" in q.types and c.kind == "code")
    f["definition_opening"] = float("definition" in q.types and c.position <= 1)
    f["count_unit"] = float(any(re.search(rf"\d\s*{re.escape(u)}", c.text) for u in q.count_units))
    for name in ENGLISH_SPECIFIC:
        f[f"en_{name}"] = f[name] if q.english else 0.0
    return f


def question_features(
    q: QuestionProfile,
    features: Sequence[Mapping[str, float]],
    scores: Sequence[float],
    gate_score: float,
    gate_features: Mapping[str, float],
) -> dict[str, float]:
    """Evidence that any candidate answers the question: the relevance gate's verdict, the best sentence's
    figures and whether a sentence of the asked type exists near the question's terms."""
    g = min(max(gate_score, 1e-4), 1 - 1e-4)
    out = {
        "gate_logit": math.log(g / (1 - g)),
        "english": float(q.english),
        "unknown_latin": float(gate_features.get("unknown_latin", 0.0)),
        "corpus_coverage": float(gate_features.get("corpus_coverage", 0.0)),
    }
    if not features:
        out.update(best_cover_window=0.0, best_dense=0.0, max_dense=0.0, max_local_window=0.0,
                   max_cover_heading=0.0, max_predicate=0.0, type_available=0.0, best_score=-10.0,
                   max_subject_window=0.0, best_states=0.0)
        return out
    best = max(range(len(features)), key=lambda i: scores[i])
    asked = [t for t in ("formula", "number") if t in q.types]
    available = 1.0
    if asked:
        available = max(f[f"type_{t}"] * f["cover_heading"] for f in features for t in asked)
    out.update(
        best_cover_window=features[best]["cover_window"],
        best_dense=features[best]["dense"],
        max_dense=max(f["dense"] for f in features),
        max_local_window=max(f["local_window"] for f in features),
        max_cover_heading=max(f["cover_heading"] for f in features),
        max_predicate=max(f["predicate"] for f in features),
        type_available=available,
        best_score=float(scores[best]),
        max_subject_window=max(f["subject_window"] for f in features),
        best_states=1.0 - max(features[best]["enumeration"], features[best]["link"], features[best]["title_like"]),
    )
    return out


def reader_text(heading: str, sentence: str, limit: int = 160) -> str:
    """The text a candidate sentence is embedded as: its nearest heading, then the sentence."""
    return f"{heading}：{sentence}"[:limit]
