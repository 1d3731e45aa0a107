"""What a sentence's form says it is, whatever it is about: a line of names, a link, a title or a statement;
and the counts and names it holds ("按三个步骤分解", "欠拟合" beside 过拟合). Pure functions over text."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from rag.text import CJK_CHARS, is_cjk, normalize

if TYPE_CHECKING:
    from rag.answer.sentences import Sentence

SENTENCE_PUNCT = re.compile(r"[，,。；;：:！？!?]")
TITLE_CHARS = 30  # a line without punctuation this long or shorter reads as a title
# "A、B、C、D" or "a, b, c, d": a line that only names things (a tag list, a table of contents) states nothing.
_ENUM_SPLIT = re.compile(r"[、,，/|；;]")
_ENUM_BREAK = re.compile(r"[。：:？?！!]")
# a clause, then its examples: "适用于处理图结构数据，如社交网络、知识图谱等" states something and names examples
_CLAUSE_THEN_EXAMPLES = re.compile(r"^[^，,、；;]{6,}[，,]\s*(?:如|例如|比如|诸如|such as|e\.g\.|including)", re.I)
LEAD_IN = re.compile(r"[：:]\s*$|如下[。：:]?\s*$")  # a line that introduces what follows ("分为两部分：")
ITEM_NUMBER = re.compile(r"^\s*(\d{1,2})\s*[.、．)）]\s*")  # "3. " opening a numbered line, and its number
# A sentence opening with a demonstrative leans on the one before it ("这种方式称为 full").
LEANS_BACK = re.compile(r"^(?:这|该|其|它|此|上述|(?:this|that|these|those|it|such)\b)", re.I)
PARENTHESES = re.compile(r"[（(][^（()）]*[)）]")
# Words of a clause, not of a name: "卷积核大小是m，则结果长度为n-m+1" lists no names
_CLAUSE_WORD = re.compile(r"是|为|则|的|了|在|把|被|将|会|就|也|都|而|\b(?:is|are|was|the|of|to)\b", re.I)
_LINK = re.compile(r"https?://|\]\(|www\.", re.I)
_LINK_TEXT = re.compile(r"!?\[[^\]]*\]\([^)]*\)|(?:https?://|www\.)\S*", re.I)
_WORD_CHAR = re.compile(rf"[{CJK_CHARS}A-Za-z0-9]")
LONE_LINK_CHARS = 8  # a sentence with fewer word characters than this besides its links is a link, not a statement


def is_enumeration(text: str) -> bool:
    """A line that only lists names: three or more short items and no sentence punctuation between them."""
    items = [t.strip() for t in _ENUM_SPLIT.split(ITEM_NUMBER.sub("", text.rstrip("。.；;")))]
    items = [t for t in items if t]  # "大模型微调、、DeepSpeed": a doubled separator is no item
    return (
        len(items) >= 3
        and all(len(t) <= _item_limit(t) and not _CLAUSE_WORD.search(t) for t in items)
        and not _ENUM_BREAK.search(text[:-1])
        and not _CLAUSE_THEN_EXAMPLES.match(text)
    )


# Members named after the word that introduces them: "包括多层感知机（MLPs）、卷积神经网络（CNNs）、……"
_MEMBERS_NAMED = re.compile(r"(?:包括|包含|分为|分成|有)[^。；;]{0,40}、[^。；;、]{1,30}、")


def names_members(text: str) -> bool:
    """Whether a sentence names the members of something: three or more after 包括/分为/有, four or more in a
    row, or a line introducing the list below it ("LLM 的三种代表性的涌现能力：")."""
    return _MEMBERS_NAMED.search(text) is not None or text.count("、") >= 3 or LEAD_IN.search(text) is not None


def states_something(text: str, features: Mapping[str, float]) -> bool:
    """Whether a candidate states anything: not a line of names or a link, nor a short title of Latin words
    alone ("Temperature Sampling"), nor a numbered title ("3. 图神经网络（GNNs，Graph Neural Networks）"), nor a
    question."""
    # a formula is no title, whatever its letters ("TPR=TP/(TP+FN)")
    bare_title = (
        bool(features.get("title_like")) and not is_cjk(text) and not re.search(r"\d", text)
        and not features.get("type_formula")
    )
    numbered = ITEM_NUMBER.match(text)
    if numbered:
        rest = PARENTHESES.sub("", text[numbered.end() :].strip())
        bare_title = bare_title or (0 < len(rest) <= 24 and not SENTENCE_PUNCT.search(rest))
    # a question the notes ask ("为何能解决过拟合？") answers none
    return not (features.get("enumeration") or features.get("link") or features.get("question_like") or bare_title)


def reads_as_sentence(text: str) -> bool:
    """Clause punctuation outside parentheses, or longer than a title: "对于分类问题，最常用的损失函数是交叉熵" is
    one, "交叉熵损失函数（Cross Entropy Loss， CE）" is a name with its gloss."""
    rest = PARENTHESES.sub("", text).strip()
    return bool(SENTENCE_PUNCT.search(rest) or rest.endswith(("。", "."))) or len(rest) > TITLE_CHARS


# A count of parts a question names ("三个步骤", "哪两个门", "three steps") and a sentence states ("按三个步骤分解").
_NUMERALS = {"两": 2, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10,
             "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_PART_UNITS = r"步骤|步|阶段|部分|方面|种|类|个|门|点|层|项|大"
_ZH_COUNT = re.compile(rf"(?<![第\d])([两二三四五六七八九十]|[2-9]|10)\s*(?:个|种|类|大)?\s*(?:{_PART_UNITS})")
_EN_COUNT = re.compile(
    r"\b(two|three|four|five|six|seven|eight|nine|ten|[2-9]|10)\s+(?:\w+\s+){0,2}?"
    r"(steps|stages|phases|parts|kinds|types|gates|components|layers|ways|categories|points)\b",
    re.I,
)
# How Chinese notes count the same parts ("two main parts": 两个部分, 两部分)
_EN_UNITS = {"steps": "步骤", "stages": "阶段", "phases": "阶段", "parts": "部分", "kinds": "种", "types": "类",
             "gates": "门", "components": "部分", "layers": "层", "ways": "种", "categories": "类", "points": "点"}
_ZH_NUMERALS = {2: "两", 3: "三", 4: "四", 5: "五", 6: "六", 7: "七", 8: "八", 9: "九", 10: "十"}


def _count_value(token: str) -> int:
    return int(token) if token.isdigit() else _NUMERALS[token.lower()]


def count_asked(question: str) -> int | None:
    """The number of parts a question names ("RLHF 分为哪三个步骤？": 3; "What are its three steps?": 3)."""
    match = _ZH_COUNT.search(question) or _EN_COUNT.search(question)
    return _count_value(match.group(1)) if match else None


def count_in_chinese(question: str) -> tuple[str, ...]:
    """How Chinese notes write the count an English question names ("What are its two main parts?": 两个部分,
    两部分); () when it names none."""
    match = _EN_COUNT.search(question)
    if match is None:
        return ()
    numeral, unit = _ZH_NUMERALS[_count_value(match.group(1))], _EN_UNITS[match.group(2).lower()]
    return (f"{numeral}个{unit}", f"{numeral}{unit}") if len(unit) > 1 else (f"{numeral}{unit}", f"{numeral}个{unit}")


def states_count(text: str, n: int) -> bool:
    """Whether a sentence states a count of n parts ("这里我们按三个步骤分解：", "分为 3 个阶段") or names n parts
    after a colon ("ACID原则指的是：Atomicity（原子性）、Consistency（一致性）、Isolation（隔离性）、Durability（持久性）。")."""
    if any(_count_value(m.group(1)) == n for m in _ZH_COUNT.finditer(text)):
        return True
    colon = re.search(r"[：:]", text)
    if colon is None:
        return False
    named = text[colon.end() :]
    items = [t for t in PARENTHESES.sub("", named).rstrip("。.；; ").split("、") if t.strip()]
    return len(items) == n >= 2 and not _ENUM_BREAK.search(named.rstrip("。."))


# Characters that join words rather than name a thing: "让人类对模型生成" speaks of 模型, not of a sibling "对模型"
_FUNCTION_CHARS = frozenset("的了对把被给让用从在与和及或是这那该此其各每某")
_MAX_HEAD = 6  # characters of the head a compound's modifier names a kind of
_NO_MODIFIER = _FUNCTION_CHARS | frozenset("不没非也都就还很最更")  # characters of no modifier that names a kind


def sibling_named(text: str, term: str, is_word: Callable[[str], bool]) -> str | None:
    """A sibling of `term` the sentence names instead of `term` itself: a word (`is_word`) as long, with the
    same last character and one other character changed ("欠拟合" for 过拟合, "输出门" for 输入门, "解码器" for
    编码器; not "的标签" for 硬标签, nor "对模型" for 大模型)."""
    n = len(term)
    if n < 3 or not is_cjk(term) or term in text:
        return None
    for i in range(len(text) - n + 1):
        word = text[i : i + n]
        if (
            word[-1] == term[-1]
            and sum(a != b for a, b in zip(word, term, strict=True)) == 1
            and not any(a != b and a in _FUNCTION_CHARS for a, b in zip(word, term, strict=True))
            and all(map(is_cjk, word))
            and is_word(word)
        ):
            return word
    return None


def compound_sibling(
    question: str, text: str, is_word: Callable[[str], bool], subject: Collection[str]
) -> tuple[str, str] | None:
    """(sibling, own) when the sentence names a sibling of a compound the question names: the same head with
    another modifier ("状态价值函数" for 动作价值函数, "测试数据" for 训练数据), and never the question's own. The
    question's modifier is one of its `subject` words ("部分" of "由哪些部分组成" is none); the modifiers are words
    (`is_word`) of two or three characters; the head, a word or two, is what they share. None otherwise."""
    for i in range(len(question)):
        for size in (2, 3):
            own_modifier = question[i : i + size]
            if own_modifier not in subject or not all(is_cjk(ch) and ch not in _NO_MODIFIER for ch in own_modifier):
                continue
            for end in range(i + size + 2, min(len(question), i + size + _MAX_HEAD) + 1):
                head = question[i + size : end]
                if not all(map(is_cjk, head)) or head[-1] in _FUNCTION_CHARS or not _one_or_two_words(head, is_word):
                    continue
                if own_modifier + head in text:
                    return None  # the sentence names it
                for found in re.finditer(re.escape(head), text):
                    modifier = text[max(0, found.start() - size) : found.start()]
                    if (
                        len(modifier) == size
                        and modifier != own_modifier
                        and all(is_cjk(ch) and ch not in _NO_MODIFIER for ch in modifier)  # "不是回归" is no kind
                        and is_word(modifier)
                        and modifier + head not in question
                    ):
                        return modifier + head, own_modifier + head
    return None


def _one_or_two_words(text: str, is_word: Callable[[str], bool]) -> bool:
    return is_word(text) or any(is_word(text[:k]) and is_word(text[k:]) for k in range(2, len(text) - 1))


def _item_limit(item: str) -> int:
    """How long a listed name may be: one in Latin letters only spells longer ("Stable Diffusion")."""
    return 14 if is_cjk(item) else 24


def is_link(text: str) -> bool:
    """A link with little or nothing besides ("参考：https://…"); a statement that ends with its source is not one."""
    if not _LINK.search(text):
        return False
    return len(_WORD_CHAR.findall(_LINK_TEXT.sub(" ", text))) < LONE_LINK_CHARS


def list_lead_in(group: Sequence[Sentence], sentence: Sentence) -> str:
    """The line that introduces the list `sentence` is an item of ("导致欠拟合的原因：" above "2、特征项不够……"):
    the nearest earlier sentence of its passage ending in a colon or 如下, with only items between; "" when the
    sentence is no list item or nothing introduces it."""
    if not (sentence.bullet or ITEM_NUMBER.match(sentence.text)):
        return ""
    for earlier in reversed(group[: sentence.pos]):
        if LEAD_IN.search(earlier.text):
            return earlier.text
        if not (earlier.bullet or ITEM_NUMBER.match(earlier.text) or earlier.continues):
            return ""
    return ""


# A sentence that names what the one before it described: "这种方式称为full.", "这种现象就是梯度弥散"
_BACK = r"^(?:这种|这个|这类|该|此|这)[^，,。；;：:]{0,10}?"
_NAMING = r"被称为|称为|称作|叫做|叫作"
_NAMES_THE_LAST = re.compile(rf"{_BACK}(?:{_NAMING}|就是)\s*(?P<name>[^，,。；;：:（(\s]{{1,24}})")
# ... and says nothing but the name ("这种现象称为概念漂移（Concept Drifting）。"), unlike "这种现象就是……" of a cause
NAMES_BACK = re.compile(rf"{_BACK}(?:{_NAMING})")


def name_given_after(group: Sequence[Sentence], sentence: Sentence) -> str:
    """The name the next sentence of its passage gives to what `sentence` describes ("…则结果长度为 n+m-1;" then
    "这种方式称为full."), normalized; "" when the next sentence names nothing back."""
    after = group[sentence.pos + 1] if sentence.pos + 1 < len(group) else None
    named = _NAMES_THE_LAST.match(after.text.strip()) if after is not None else None
    return normalize(named.group("name")).strip(" .。") if named else ""

