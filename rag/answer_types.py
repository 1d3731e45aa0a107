"""What a question asks for and what a sentence holds: answer-type cues. Pure functions over text.

A question asks for a formula, a number, a cause, a definition, a list, a drawback, an advantage, a comparison, a
method or an effect (`question_types`); a sentence holds some of these by surface cues (`sentence_types`). The
reader's features, its refusal rules, the retriever (English attribute words searched by their Chinese names) and
the relevance gate all read these tables, so they live here, below all of them. The patterns describe kinds of
questions and answers in general, not any question of an evaluation set.
"""

from __future__ import annotations

import re

from rag.text import CJK_CHARS

# A question that asks for a year ("LoRA 是哪一年提出的？", "When was BERT released?"; not "什么时候用 dropout？" or
# "When is a product defined?"), which `rag.answer.reader` requires the passages to give.
YEAR_ASKED = re.compile(
    r"哪一?年|何年|(?:什么时候|何时)(?:被|由[^，,？?]{0,12})?(?:提出|发布|发表|出现|诞生|推出|开源|发明)"
    r"|\b(?:what|which) year\b|\bwhen (?:was|were|did)\b",
    re.I,
)


def _compiled(patterns: dict[str, str]) -> dict[str, re.Pattern[str]]:
    """Each named pattern compiled, case-insensitive."""
    return {name: re.compile(pattern, re.I) for name, pattern in patterns.items()}


# What a question asks for, and the cues that a sentence holds that kind of answer.
QUESTION_TYPES: dict[str, re.Pattern[str]] = _compiled(
    {
        "formula": r"公式|怎么算|如何计算|计算方法|怎么计算|估算|怎么求|如何求|表达式|formula|equation|calculat|comput|estimat",
        "number": r"多少|几个|几种|几层|几维|几位|几倍|范围|取值|数值|比例|大小|how many|how much|range|value|number of|size",
        "cause": r"为什么|为何|为啥|干嘛要|原因|怎么会|导致|why|cause|reason",
        "definition": r"什么是|是什么|指什么|什么意思|含义|定义|是啥|咋回事|怎么回事|what is|what are|what does|mean|defin",
        "list": r"哪些|哪几|有什么|包括|包含|分为|分成|种类|类型|步骤|(?:什么|啥|的|个)流程|流程(?:是|如何|怎样|怎么)"
        r"|[两二三四五六七八九十几多]\s*(?:个|种|类|步|项|点|部分|阶段|方面|大)"
        r"|which|what are|kinds|types|steps|list|(?:two|three|four|five) ",
        "drawback": r"缺点|不足|劣势|局限|问题|弊端|坏处|缺陷|disadvantage|drawback|downside|limitation|problem|weakness",
        "advantage": r"优点|优势|好处|作用|用处|意义|advantage|benefit|why use|purpose",
        "compare": r"区别|不同|差异|比较|对比|相比|和.*比|vs|versus|differ(?!entia)|compare|comparison",
        "how": r"怎么(?!回事)|如何|怎样|咋(?!回事)|方法|how",
        "effect": r"会怎样|会如何|会怎么样|什么影响|影响|变化|变大|变小|增大|减小|太大|太小|过大|过小|"
        r"what happens|effect|impact|too (?:large|high|small|low)",
    }
)
SENTENCE_TYPES: dict[str, re.Pattern[str]] = _compiled(
    {
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
    }
)


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


# An English verb of remedy ("How to prevent overfitting?") and how the notes say it: "能有效防止过拟合",
# "欠拟合的解决方法". No answer type of its own: it asks how, of a problem.
_ENGLISH_REMEDY = re.compile(
    r"prevent(?:s|ed|ing|ion)?|avoid(?:s|ed|ing|ance)?|solv(?:e|es|ed|ing)|fix(?:es|ing)?|mitigat(?:e|es|ed|ing|ion)"
    r"|alleviat(?:e|es|ed|ing)|overcom(?:e|es|ing)|tackl(?:e|es|ed|ing)|remed(?:y|ies|ied)|reduc(?:e|es|ed|ing|tion)",
    re.I,
)
REMEDY_WORDS = ("解决", "防止", "避免", "缓解", "克服", "减少", "降低")


# A question asking how a problem is fixed ("梯度消失怎么解决", "如何防止过拟合", "有什么解决办法"), and a sentence
# that says how ("能有效防止过拟合", "skip connect 改善了……梯度消散问题", "解决办法：……")
_REMEDY_ASKED = re.compile(
    r"(?:怎么|怎样|如何|咋|怎么样)(?:才能|来|去)?(?:解决|防止|避免|缓解|克服|减少|降低|应对|处理|改善)"
    r"|(?:解决|防止|避免|缓解|克服|应对)(?:的)?(?:方法|办法|方案|措施)"
)
_REMEDY_STATED = re.compile(rf"{'|'.join(REMEDY_WORDS)}|改善|应对|措施|办法|方法(?:包括|有)|可以通过")


# A question that asks which things make up a kind or a whole ("深度神经网络包括哪些网络？", "分为哪几类？",
# "What types of attention are there?"), answered by a line that names them, not by the kind's definition
_MEMBERS_ASKED = re.compile(
    r"(?:包括|包含|有|分为|分成|分)哪(?:些|几)|哪几(?:种|类|个)|\b(?:types|kinds|categories|variants) of\b", re.I
)


def asks_members(question: str) -> bool:
    """Whether the question asks what a kind or a whole is made of: its members, kinds or parts."""
    return _MEMBERS_ASKED.search(question) is not None


# A question that asks what a term means ("“多头”指什么？", "温度是什么意思？", "What does perplexity mean?"): a
# sentence that defines it ("“多头”实际上是指……") answers, not one that merely uses it
_MEANING_ASKED = re.compile(r"指(?:的是)?什么|(?:什么|啥)意思|含义|\bwhat does\b.*\bmean\b|\bmeaning of\b", re.I)


def asks_meaning(question: str) -> bool:
    """Whether the question asks what a term means."""
    return _MEANING_ASKED.search(question) is not None


def asks_remedy(question: str) -> bool:
    """Whether a question asks how to fix a problem, in Chinese or in English ("How to prevent overfitting?")."""
    if _REMEDY_ASKED.search(question):
        return True
    words = re.findall(r"[a-z]+", question.lower())
    return "how" in words and any(is_remedy_verb(w) for w in words)


def states_remedy(text: str) -> bool:
    """Whether a sentence says how something is fixed, avoided or eased."""
    return _REMEDY_STATED.search(text) is not None


def is_remedy_verb(word: str) -> bool:
    """An English verb of remedy ("prevent", "reduces"): it asks how, whatever else the notes write it in
    ("reduce_sum")."""
    return _ENGLISH_REMEDY.fullmatch(word) is not None


def attribute_translations(word: str) -> tuple[str, ...]:
    """The Chinese words for what an English question word asks of its topic, by the answer type it names
    ("disadvantages" -> 缺点, 不足, 劣势…) or as a remedy ("prevented" -> 解决, 防止…); () for a word that names
    neither."""
    named = _named_type(word)
    if named:
        return _CHINESE_CUES[named]
    return REMEDY_WORDS if _ENGLISH_REMEDY.fullmatch(word) else ()


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
# A choice between figures asks for one ("k 一般取 5 还是 10？", "3 层还是 5 层", "0.1 or 0.01?")
NUMBER_CHOICE = r"\d+(?:\.\d+)?\s*[^\s\d，,。？?]{0,2}\s*还是\s*\d|\b\d+(?:\.\d+)?\s+or\s+\d"
FIGURE_ASKED = re.compile(
    NUMBER_CHOICE + r"|(?<![或])多少|(?<![哪好这那前后])(?<!少数)几(?:个|种|层|维|位|倍|次|月|天|年|分钟|小时|步|轮)(?![^，,。？?！!；;、]{0,8}的)"
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


# "X 解决了什么问题" / "what problem does X solve" asks what X is for: the problem is not X's drawback.
_PROBLEM_SOLVED = re.compile(
    r"(?:解决|应对|处理|缓解|针对)了?(?:什么|哪些|哪个|哪类|哪种|啥)(?:样的)?问题|what problems? (?:does|do|did) .+ (?:solve|address)"
    r"|(?:solves?|address(?:es)?) what problems?",
    re.I,
)
# A question that asks who made something, or where it was published: a person, a paper, an organization.
SOURCE_ASKED = re.compile(
    r"(?:是|由)?谁(?:提出|发明|开发|发布|设计|写|创造|首先|最早)|哪篇论文|哪一篇论文|哪个公司|哪家公司|哪个团队|哪个机构"
    r"|作者是(?:谁|哪)|\bwho (?:first )?(?:proposed|invented|introduced|developed|created|designed|wrote|released|published)\b"
    r"|\bwhich (?:paper|company|lab|team|organi[sz]ation)\b|\bwho (?:are|were) the authors\b",
    re.I,
)
# ... and what names one in a sentence: a paper, a lab or a company ("提出" alone names nobody: "最初提出的那个模型")
_SOURCE_NAMED = re.compile(
    r"论文|paper|et al|arxiv|公司|实验室|大学|研究院|团队"
    r"|openai|google|谷歌|deepmind|\bmeta\b|facebook|微软|microsoft|百度|阿里|腾讯|清华|stanford|斯坦福",
    re.I,
)


def names_source(text: str) -> bool:
    """Whether a sentence names where something comes from: a paper, its authors, a lab or a company."""
    return _SOURCE_NAMED.search(text) is not None


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
_GOES_WRONG = re.compile(r"不稳定|振荡|震荡|过拟合|欠拟合|丢失|浪费|困难|较差|变差|不佳|不好|不匹配|不一致")


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
