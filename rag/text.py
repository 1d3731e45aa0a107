"""Text primitives used the same way at ingest and at query time: normalization, CJK characters, tokens, sentences.

`Tokenizer` wraps a private jieba instance so the corpus's own terms (headings, aliases) can be added as a
user dictionary without touching jieba's global state.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

# Function words that carry no topic. Kept short on purpose: BM25's IDF already discounts common words.
STOPWORDS = frozenset(
    """
    的 了 是 在 和 与 及 或 也 就 都 而 被 把 对 从 向 以 之 其 这 那 这个 那个 这些 那些 一个 一种 一些 有 有的
    吗 呢 吧 啊 呀 嘛 么 哪 哪些 哪个 哪种 哪几个 哪几种 几个 几种 几类 几步 什么 怎么 怎样 如何 为什么 为何 多少 几 是否 能否
    可以 能 会 要 需要
    我 你 他 她 它 我们 你们 他们 它们 请 请问 一下 下 上 中 里 时 时候 之后 之前 还是 还有 以及 并且 但是 但
    如果 因为 所以 然后 并 又 很 更 最 非常 比较 通常 一般 主要 就是 也是 叫 叫做 称为 指 指的是 呢 啥 咋 怎么样
    说 讲 到底 具体 一样 东西 情况 问题 方面 作用 有何 有啥 区别 不同 含义 意思
    怎么办 咋办 咋整 怎么破 怎么回事 咋回事 回事 干什么 干啥 干嘛 做什么 啥样 什么样 是不是 有没有 究竟
    求问 请教 求教 问 问下 麻烦 讲讲 说说 聊聊 解释一下 搞不懂 不懂 大佬 哪位 小白 新手 老是
    a an the of to in on for and or is are was were be been being what which who whom how why when where
    do does did can could should would will shall may might must this that these those it its with by as at
    from about into than then there their them they we you your i me my our us he she his her not no yes
    please tell explain describe between vs
    """.split()  # noqa: SIM905 - a word list reads better as text
)

# CJK Unified Ideographs and Extension A, as the body of a regex character class ("[{CJK_CHARS}]"): the one
# definition of "a Chinese character" for tokens, alias names and sentence kinds.
CJK_CHARS = r"\u3400-\u9fff"
# CJK Compatibility Ideographs: added where any ideograph counts (the OpenAI token estimate, the sources header).
CJK_COMPAT_CHARS = r"\uf900-\ufaff"
HAS_CJK = re.compile(f"[{CJK_CHARS}]")
_CJK_RUN = re.compile(f"[{CJK_CHARS}]+")

_SENTENCE_END = re.compile(r"[。！？；!?;]+|\.(?=\s|$)|\n")
_PUNCT_OR_SPACE = re.compile(r"^[\W_]+$", re.UNICODE)
_LATIN_TERM = re.compile(r"[a-z0-9][a-z0-9+#._\-]*[a-z0-9+#]|[a-z0-9]")

# jieba's HMM (Viterbi) copies its path on every character, so a run of characters it does not know ("梯" * 30000)
# costs time quadratic in the run's length. Runs of word characters are cut into pieces of at most MAX_RUN_CHARS
# before jieba sees them (ordinary text has a separator long before that), and one call reads at most
# MAX_TOKENIZE_CHARS characters: a chunk (<= 4000 characters) or a question always fits.
MAX_RUN_CHARS = 200
MAX_TOKENIZE_CHARS = 20_000
_LONG_RUN = re.compile(rf"[^\W_]{{{MAX_RUN_CHARS + 1},}}")
MAX_SUBWORD_CHARS = 16  # longer dictionary terms inside a long word are not looked for


def bounded_pieces(text: str, max_chars: int = MAX_TOKENIZE_CHARS) -> list[str]:
    """`text` (its first `max_chars` characters) as pieces to segment one by one: any run of word characters
    longer than MAX_RUN_CHARS is cut every MAX_RUN_CHARS characters; everything else stays in one piece."""
    text = text[:max_chars]
    pieces: list[str] = []
    start = 0
    for match in _LONG_RUN.finditer(text):
        if match.start() > start:
            pieces.append(text[start : match.start()])
        run = match.group(0)
        pieces.extend(run[i : i + MAX_RUN_CHARS] for i in range(0, len(run), MAX_RUN_CHARS))
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def normalize(text: str) -> str:
    """NFKC width folding and lowercasing: 'ＬｏＲＡ' and 'LoRA' become 'lora'."""
    return unicodedata.normalize("NFKC", text).lower()


_HYPHEN_IN_WORD = re.compile(r"(?<=[a-z])-(?=[a-z])")


def fold_hyphens(text: str) -> str:
    """Normalized text with the hyphens inside Latin words dropped, so "warm-up" and "warmup" compare equal."""
    return _HYPHEN_IN_WORD.sub("", normalize(text))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Split `text` into sentences at 。！？； . ! ? ; and line ends; return (start, end) offsets.

    Each span includes its closing punctuation; whitespace-only spans are dropped. A '.' ends a sentence
    only when followed by whitespace or the end, so '3.5' and 'np.dot' stay whole; an ASCII '!' or '?' inside
    a formula or term, or the '!' opening a markdown image, does not end one either (`_inside_term`).
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if _inside_term(text, match.start(), match.end()):
            continue
        end = match.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _inside_term(text: str, start: int, end: int) -> bool:
    """An ASCII '!' or '?' after a letter or digit that is part of what follows, not a sentence end: glued to
    the next character ("10!=3628800", "10!种", "a?b"), or a factorial before Chinese text ("遍历 T! 种路径";
    Chinese prose ends its sentences with full-width marks)."""
    mark = text[start:end]
    if mark == "!" and text[end : end + 1] == "[":  # a markdown image, "![alt](url)"
        return True
    if mark not in ("!", "?") or start == 0 or not text[start - 1].isalnum():
        return False
    following = text[end : end + 1]
    if following and not following.isspace():
        return True
    rest = text[end : end + 4].lstrip(" ")
    return mark == "!" and bool(rest) and HAS_CJK.match(rest) is not None


_jieba_base: tuple[dict[str, int], int] | None = None
_jieba_base_lock = threading.Lock()


def _jieba_dictionary(cache_dir: Path | None) -> tuple[dict[str, int], int]:
    """jieba's main dictionary (word -> frequency, and their total), read once per process: reading it takes
    1.5-2.5 s (from jieba's cache file as from its text), and every Tokenizer (each ingest, each index load or
    swap) starts from it. Callers copy it before adding words."""
    global _jieba_base
    with _jieba_base_lock:
        if _jieba_base is None:
            import jieba

            base = jieba.Tokenizer()
            if cache_dir is not None:
                base.tmp_dir = str(cache_dir)
            base.initialize()
            _jieba_base = (base.FREQ, base.total)
        return _jieba_base


USER_WORD_FREQ = 2000  # jieba frequency of a user word: enough to be kept whole over its parts


class Tokenizer:
    """jieba search-mode tokens, normalized, with stopwords and punctuation dropped.

    English terms stay whole ("lora", "gpt-3"); `user_words` (domain terms) are kept as single tokens, and
    search mode also emits their parts, so "灾难性遗忘" matches both itself and "遗忘".
    """

    def __init__(
        self, user_words: Iterable[str] = (), cache_dir: Path | None = None, max_chars: int = MAX_TOKENIZE_CHARS
    ) -> None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        self._jieba = jieba.Tokenizer()
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            self._jieba.tmp_dir = str(cache_dir)
        freq, total = _jieba_dictionary(cache_dir)
        self._jieba.FREQ, self._jieba.total = dict(freq), total  # a private copy: add_word changes it
        self._jieba.initialized = True
        self._lock = threading.Lock()
        self.max_chars = max_chars
        self.user_words: list[str] = []
        self._user_word_set: set[str] = set()
        for word in sorted(set(user_words)):
            self.add_word(word)

    def add_word(self, word: str) -> None:
        word = normalize(word).strip()
        # jieba cannot keep a term with spaces as one token, and Latin-only words in its dictionary make
        # it split longer Latin words that contain them ("ml" inside "html"); Latin runs stay whole anyway.
        if len(word) >= 2 and " " not in word and is_cjk(word) and not _PUNCT_OR_SPACE.match(word):
            self._jieba.add_word(word, freq=USER_WORD_FREQ)
            self.user_words.append(word)
            self._user_word_set.add(word)

    def is_user_word(self, word: str) -> bool:
        """True for a domain term added as a user word (the notes' glossary names and terms)."""
        return normalize(word) in self._user_word_set

    def general_frequency(self, word: str) -> int:
        """How often jieba's general dictionary counts `word`: 0 for a word it does not know (one its HMM
        formed, say "全量"); user words excluded."""
        word = normalize(word)
        return 0 if word in self._user_word_set else self._jieba.FREQ.get(word) or 0

    def tokenize(self, text: str) -> list[str]:
        """Tokens for BM25: the same function at ingest and at query time (linear in the text's length)."""
        pieces = self._segment(text, self._jieba.cut_for_search)
        tokens = []
        for piece in pieces:
            piece = piece.strip()
            if not piece or piece in STOPWORDS or _PUNCT_OR_SPACE.match(piece):
                continue
            tokens.append(piece)
            if len(piece) >= 5 and is_cjk(piece):
                # search mode emits only 2- and 3-character parts; keep longer known terms inside a long
                # word too ("神经网络" inside "卷积神经网络")
                tokens.extend(self._long_subwords(piece))
        return tokens

    def _segment(self, text: str, cut: Callable[[str], Iterable[str]]) -> list[str]:
        """jieba's segmentation of the bounded pieces of the normalized text."""
        words: list[str] = []
        for piece in bounded_pieces(normalize(text), self.max_chars):
            with self._lock:  # jieba's lazy initialisation is not thread-safe; other callers interleave
                words.extend(cut(piece))
        return words

    def _long_subwords(self, word: str) -> list[str]:
        freq = self._jieba.FREQ
        return [
            word[i : i + n]
            for n in range(4, min(len(word), MAX_SUBWORD_CHARS + 1))
            for i in range(len(word) - n + 1)
            if freq.get(word[i : i + n])
        ]

    def words(self, text: str) -> list[str]:
        """Precise-mode words (no search-mode sub-words), for features such as term coverage."""
        pieces = self._segment(text, self._jieba.cut)
        return [p.strip() for p in pieces if p.strip() and p.strip() not in STOPWORDS and not _PUNCT_OR_SPACE.match(p.strip())]

    def pieces(self, text: str) -> list[str]:
        """Precise-mode pieces with nothing dropped: they join back to `normalize(text)` (up to `max_chars`), so
        their lengths give the word boundaries of the text."""
        return self._segment(text, self._jieba.cut)


def spelled_as_one(words: Sequence[str]) -> re.Pattern[str]:
    """The (normalized) words as one name: joined by whitespace, "_", "-" or nothing, not inside a longer word
    ("kv cache", "gpt-4" as "GPT4")."""
    return re.compile(r"(?<![a-z0-9])" + r"[\s_\-]*".join(re.escape(w) for w in words if w) + r"(?![a-z0-9])")


# characters that join words into a clause rather than into one term (的, 是, 和, 用 …)
JOINING_CHARS = "的了是在和与或及跟就都也很可被把对从向为用"


def written_form(term: str, text: str) -> str | None:
    """How `text` writes the Chinese `term`: the term itself, or a variant with the same first character and the
    same last word and a few characters of its own between, none of them joining a clause ("检索增强型生成" for
    检索增强生成, "全参数微调" for 全量微调); None when it writes neither."""
    if term in text:
        return term
    pattern = _variant_pattern(term)
    match = pattern.search(text) if pattern else None
    return match.group(0) if match else None


def written_forms(term: str, text: str) -> list[str]:
    """Every variant of the Chinese `term` that `text` writes (`written_form`), the term itself included, in order."""
    pattern = _variant_pattern(term)
    return [m.group(0) for m in pattern.finditer(text)] if pattern else []


def _variant_pattern(term: str) -> re.Pattern[str] | None:
    head, first, middle = term[-2:], term[0], len(term) - 3
    if middle < 0:
        return None
    gap = rf"[^\s{JOINING_CHARS}，,。；;：:、（）()]{{{max(middle - 1, 0)},{middle + 2}}}"
    return re.compile(re.escape(first) + gap + re.escape(head))


def char_bigrams(text: str) -> set[str]:
    """Character bigrams of the CJK runs of `text` plus whole Latin terms: a segmentation-free term set."""
    norm = normalize(text)
    grams: set[str] = set(_LATIN_TERM.findall(norm))
    for run in _CJK_RUN.findall(norm):
        if len(run) == 1:
            grams.add(run)
        grams.update(run[i : i + 2] for i in range(len(run) - 1))
    return grams


def singular(word: str) -> str:
    """English plural to singular by spelling alone: 'models' -> 'model', 'RNNs' -> 'RNN', 'entropies' ->
    'entropy', 'losses' -> 'loss'; 'loss', 'corpus', 'analysis' stay. Used on the last word of a name ("language models")."""
    lower = word.lower()
    if len(word) > 4 and lower.endswith("ies"):
        return word[:-3] + ("Y" if word[-1].isupper() else "y")
    if len(word) > 4 and lower.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if len(word) < 3 or not lower.endswith("s") or lower.endswith(("ss", "us", "is")):
        return word
    return word[:-1]


def base_forms(word: str) -> list[str]:
    """Spellings an English -ing form may have as a name, by spelling alone: 'overfitting' -> ['overfitt',
    'overfit', 'overfitte'], 'encoding' -> ['encod', 'encode']; [] for any other word, or one too short to tell
    ('sing', 'string'). Past participles stay as they are: 'masked words' are not about the name 'mask'."""
    lower = word.lower()
    stem = lower[:-3] if lower.endswith("ing") else None
    if stem is None or len(stem) < 3 or not any(c in "aeiouy" for c in stem):
        return []
    forms = [stem]
    if len(stem) > 2 and stem[-1] == stem[-2] and stem[-1] not in "aeiouls":  # overfitt -> overfit, stopp -> stop
        forms.append(stem[:-1])
    forms.append(stem + "e")  # regulariz -> regularize, encod -> encode
    return forms


def is_cjk(text: str) -> bool:
    """True when the text holds any CJK ideograph."""
    return HAS_CJK.search(text) is not None


_GLUED = "有是要会在时"  # what jieba glues to the word before it in a question ("输入门有什么作用" -> 输入 / 门有)


def unglued(tokens: Sequence[str], known: Callable[[str], bool]) -> list[str]:
    """`tokens` plus, for a Chinese token the notes never use that ends in a character jieba glued to the word
    before it, that word when the notes use it ("门有" -> 门, so 输入门 is searched as the notes' 输入 / 门)."""
    out = list(tokens)
    for token in tokens:
        word = token[:-1]
        glued = 2 <= len(token) <= 3 and token[-1] in _GLUED and is_cjk(word)
        if glued and word not in out and not known(token) and known(word):
            out.append(word)
    return out


MAX_KNOWN_WORD = 4  # the longest word of the notes looked for where jieba cut a question into words they never use
_PARTICLES = "是的了"  # what jieba glues to the word before it ("阶是", "法是")


def known_words(word: str, text: str, tokens: Sequence[str], known: Callable[[str], bool]) -> list[str]:
    """The words of the notes that a Chinese word of `text` they never use stands for (`known`: whether the
    notes use a word). The longest part of it they use, when that part holds most of its characters ("改进版" ->
    "改进"); else the notes' words that jieba's cut missed over it and a character either side ("设太|大会" of
    "学习率设太大会怎样" -> "太大"), longest first; else the word without the function characters jieba glued to
    it ("阶是" -> "阶"); else the word itself. `tokens`: the search tokens of `text`."""
    if not is_cjk(word) or known(word):
        return [word]
    best = max((t for t in tokens if t != word and t in word and known(t)), key=len, default="")
    if 3 * len(best) >= 2 * len(word):
        return [best]
    at = text.find(word)
    if at < 0:
        return [word]
    lo, hi = max(0, at - 1), min(len(text), at + len(word) + 1)
    found: list[tuple[int, int]] = []
    for size in range(min(hi - lo, MAX_KNOWN_WORD), 1, -1):
        for i in range(lo, hi - size + 1):
            piece = text[i : i + size]
            overlaps = i < at + len(word) and i + size > at
            free = all(i + size <= a or i >= b for a, b in found)
            if overlaps and free and all(map(is_cjk, piece)) and known(piece):
                found.append((i, i + size))
    if found:
        return [text[a:b] for a, b in sorted(found)]
    core = word.strip(_PARTICLES)  # "阶是" of "张量的阶是什么": jieba glued 是 to the notes' word 阶
    return [core] if core and known(core) else [word]
