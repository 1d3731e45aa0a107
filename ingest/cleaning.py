"""General cleaning rules for notes: markdown structure helpers, boilerplate lines, index text.

Two different jobs live here:

* `noise_spans` finds whole lines that are web-page boilerplate (a note saved from a blog keeps its
  "enable JavaScript" banner, reading-time line and share/author/copyright footer). The chunker keeps
  chunks from starting or ending in them and drops them from the index text. The rules are deliberately
  conservative: a false positive silently deletes a user's content from search.
* `clean_for_index` turns a chunk's markdown into the plain text that BM25 and the embedder see.

The small structure helpers (`split_lines`, `fenced_blocks`, `atx_heading`) are shared with the chunker and
the loader so that "what is a heading" and "what is inside a code block" have one definition.
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote, urlsplit

# --------------------------------------------------------------------------------------------------
# Structure helpers
# --------------------------------------------------------------------------------------------------

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")


def split_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line, `end` excluding the "\\n" (a "\\r" of CRLF stays in the line)."""
    lines: list[tuple[int, int]] = []
    position = 0
    for part in text.split("\n"):
        lines.append((position, position + len(part)))
        position += len(part) + 1
    if lines and lines[-1][0] == len(text):
        lines.pop()  # nothing after the final newline (or an empty text)
    return lines


def fenced_blocks(text: str, lines: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(first, last) line indices (inclusive) of each fenced code block, fence lines included.

    CommonMark rules: a fence is 3+ backticks or tildes indented at most 3 spaces; it is closed by a line
    of the same character at least as long with nothing after it; an unclosed fence runs to the end.
    """
    blocks: list[tuple[int, int]] = []
    if "```" not in text and "~~~" not in text:
        return blocks
    fence: str | None = None
    first = 0
    for i, (start, end) in enumerate(lines):
        line = text[start:end].rstrip("\r")
        if fence is None:
            match = _FENCE_OPEN.match(line)
            # A backtick fence's info string may not contain backticks (that is inline code instead).
            if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
                fence, first = match.group(1), i
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if indent <= 3 and stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            blocks.append((first, i))
            fence = None
    if fence is not None:
        blocks.append((first, len(lines) - 1))
    return blocks


def fenced_line_flags(text: str, lines: list[tuple[int, int]]) -> list[bool]:
    """For each line, whether it belongs to a fenced code block (fence lines included)."""
    flags = [False] * len(lines)
    for first, last in fenced_blocks(text, lines):
        flags[first : last + 1] = [True] * (last + 1 - first)
    return flags


def atx_heading(line: str) -> tuple[int, str] | None:
    """(level, raw text) of a markdown ATX heading line ("## Title ##"), else None.

    A heading needs a space after the hashes and some text: "#hashtag", "#" and "#include" are not
    headings; neither is anything indented 4+ spaces (an indented code line such as "    # comment").
    """
    match = _ATX_HEADING.match(line.rstrip("\r\n"))
    if not match or not match.group(2):
        return None
    title = _CLOSING_HASHES.sub("", match.group(2)).strip()
    if not title:
        return None
    return len(match.group(1)), title


def heading_title(raw: str, max_chars: int = 120) -> str:
    """A heading's text for titles and heading paths: markup removed, one line, bounded length."""
    raw = raw[: max_chars * 4]  # a runaway one-line "heading" is not worth cleaning in full
    plain = "".join(ch for ch in raw if unicodedata.category(ch) != "Cc")  # "# \x00": no NUL in any path
    return (" ".join(clean_for_index(raw).split()) or " ".join(plain.split()))[:max_chars]


def markdown_headings(text: str) -> list[tuple[int, str, int, int]]:
    """(level, raw text, line start, line end) of every ATX heading outside fenced code blocks."""
    lines = split_lines(text)
    flags = fenced_line_flags(text, lines)
    found = []
    for (start, end), fenced in zip(lines, flags, strict=True):
        if fenced:
            continue
        heading = atx_heading(text[start:end])
        if heading:
            found.append((heading[0], heading[1], start, end))
    return found


# --------------------------------------------------------------------------------------------------
# Boilerplate lines
# --------------------------------------------------------------------------------------------------

# A banner shown by sites that render with JavaScript ("Please enable JavaScript to view the contents").
_JS_NOTICE = re.compile(
    r"\b(?:enable|turn\s+on|activate|allow)\s+javascript\b|\bjavascript\s+(?:is\s+)?(?:disabled|required|"
    r"must\s+be\s+enabled|is\s+not\s+enabled)\b|(?:启用|开启|打开|允许)\s*javascript",
    re.IGNORECASE,
)
# Reading-time / word-count meta lines: "·  ☕ 6 分钟", "5 min read", "阅读时长 6 分钟", "本文共 1200 字 阅读约 6 分钟".
_READING_TIME = re.compile(
    r"^(?:本文)?(?:共|字数)?\s*(?:\d[\d,]*\s*(?:字|words?))?\s*"
    r"(?:阅读(?:时间|时长|需要|约)?|预计阅读(?:时间)?|reading\s*time|约|大约)?\s*(?:约)?\s*"
    r"\d+(?:\.\d+)?\s*(?:分钟|mins?|minutes?)\s*(?:阅读|读完|read)?$",
    re.IGNORECASE,
)
# Whole lines that are only a page-furniture label (compared after dropping punctuation, symbols and spaces).
# fmt: off
_LABEL_LINES = frozenset({
    "分享", "分享到", "分享至", "分享本文", "分享文章", "本文作者", "文章作者", "版权声明", "上一篇", "下一篇", "上一篇文章",
    "下一篇文章", "上一页", "下一页", "微信公众号", "公众号", "扫码关注", "关注我们", "关注公众号", "扫一扫", "发表评论", "返回顶部",
    "回到顶部", "阅读全文", "点赞", "打赏", "赞赏", "赞赏支持", "作者", "评论", "留言", "收藏", "share", "shareon",
    "sharethis", "sharethispost", "author", "comments", "leaveacomment", "leaveareply",
    "previouspost", "nextpost", "olderpost", "newerpost", "backtotop", "readmore",
})
# fmt: on
# "本文作者：…", "版权声明：…", "上一篇：…" — labels that only page footers put in front of a colon.
_LABELED_FOOTER = re.compile(
    r"^(?:本文作者|文章作者|版权声明|版权所有|本文链接|转载请注明|上一篇|下一篇|上一页|下一页|分享到|"
    r"previous\s+post|next\s+post|posted\s+by|published\s+by)\s*[:：]",
    re.IGNORECASE,
)
_COPYRIGHT = re.compile(r"^(?:copyright\s*(?:©|\(c\)|&copy;)|©|\(c\)\s*\d{4})|all\s+rights\s+reserved", re.I)
_POWERED_BY = re.compile(r"^powered\s+by\s+\S+", re.IGNORECASE)


def _label_key(line: str) -> str:
    """The line reduced to letters and digits, lowercased: "  • 分享 »" -> "分享"."""
    return "".join(
        ch for ch in line.lower() if not ch.isspace() and unicodedata.category(ch)[0] not in "PSZC"
    )


def is_noise_line(line: str) -> bool:
    """Whether a single line (without its newline) is web-page boilerplate rather than note content."""
    stripped = line.strip()
    if not stripped or len(stripped) > 200:
        return False  # blank lines are handled as runs; long lines are prose, whatever they mention
    if _JS_NOTICE.search(stripped) and len(stripped) <= 120:
        return True
    key = _label_key(stripped)
    if key in _LABEL_LINES:
        return True
    if _LABELED_FOOTER.match(stripped):
        return True
    if _COPYRIGHT.search(stripped) or _POWERED_BY.match(stripped):
        return True
    # Reading time: compare on the line without decoration ("·  ☕ 6 分钟" -> "6 分钟").
    plain = "".join(ch for ch in stripped if ch.isalnum() or ch in " .,")
    return bool(_READING_TIME.match(plain.strip()))


def noise_spans(text: str) -> list[tuple[int, int]]:
    """Sorted, merged spans of whole lines that are boilerplate or runs of 2+ blank lines.

    Each span starts at a line start and ends after the line's newline (or at the end of the text).
    Lines inside fenced code blocks and markdown heading lines are never noise: they are structure.
    """
    lines = split_lines(text)
    fenced = fenced_line_flags(text, lines)
    raw: list[tuple[int, int]] = []
    blank_run: list[int] = []

    def flush_blank_run() -> None:
        if len(blank_run) >= 2:
            raw.extend(_line_span(text, lines[i]) for i in blank_run)
        blank_run.clear()

    for i, (start, end) in enumerate(lines):
        line = text[start:end]
        if fenced[i]:
            flush_blank_run()
            continue
        if not line.strip():
            blank_run.append(i)
            continue
        flush_blank_run()
        if atx_heading(line) is None and is_noise_line(line):
            raw.append(_line_span(text, (start, end)))
    flush_blank_run()
    return _merge(sorted(raw))


def _line_span(text: str, line: tuple[int, int]) -> tuple[int, int]:
    start, end = line
    return start, end + 1 if end < len(text) and text[end] == "\n" else end


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


# --------------------------------------------------------------------------------------------------
# Index text
# --------------------------------------------------------------------------------------------------

_HTML_TAGS = (
    "a|abbr|article|aside|audio|b|big|blockquote|body|br|button|caption|center|cite|code|col|colgroup|dd|del|"
    "details|div|dl|dt|em|figcaption|figure|font|footer|h[1-6]|head|header|hr|html|i|iframe|img|input|ins|"
    "kbd|label|li|mark|meta|nav|ol|p|path|picture|pre|section|small|source|span|strike|strong|sub|summary|"
    "sup|svg|table|tbody|td|tfoot|th|thead|tr|tt|u|ul|video"
)
_SCRIPT_STYLE = re.compile(r"<(script|style|noscript)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_IMG_TAG = re.compile(r"<img\b([^<>]*)>", re.IGNORECASE)
_ALT_ATTR = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
# Only known tag names: "<s>", "<UNK>" or "<prompt,answer>" in AI notes are text, not markup.
_TAG = re.compile(rf"</?(?:{_HTML_TAGS})\b(?:\s[^<>]*)?/?>", re.IGNORECASE)
_BLOCK_TAG = re.compile(r"</?(?:br|p|div|li|tr|td|th|h[1-6]|hr|table|ul|ol|pre|blockquote)\b[^<>]*>", re.I)
# Link/image patterns exclude "[" from their label and bound every part, so a line of "[[[[" or "](](](" is
# scanned in linear time.
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]\n]+\]:[ \t]*\S+.*$", re.MULTILINE)
_IMAGE = re.compile(
    r"!\[([^\[\]\n]{0,500})\]\(\s*<?([^()\s>]{0,2000})>?(?:\s+[\"'(][^\n]{0,300}?[\"')])?\s*\)"
)
_IMAGE_REF = re.compile(r"!\[([^\[\]\n]{0,500})\]\[[^\[\]\n]{0,200}\]")
_LINK = re.compile(r"\[([^\[\]\n]{0,500})\]\(\s*<?([^()\s>]{0,2000})>?(?:\s+[\"'(][^\n]{0,300}?[\"')])?\s*\)")
_LINK_REF = re.compile(r"\[([^\[\]\n]{1,500})\]\[[^\[\]\n]{0,200}\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^<>\s]+)>", re.IGNORECASE)
_BARE_URL = re.compile(r"\b(?:https?|ftp)://[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]+", re.IGNORECASE)
_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}(?=[ \t]|$)[ \t]*(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_QUOTE_MARK = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)
_BULLET_MARK = re.compile(r"^[ \t]*[-*+•·▪◦‣●○■□][ \t]+", re.MULTILINE)
_FENCE_LINE = re.compile(r"^ {0,3}(?:`{3,}|~{3,}).*$", re.MULTILINE)
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$", re.M)
_TABLE_ROW = re.compile(r"^[ \t]*\|.*$", re.MULTILINE)
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)
_STRONG = re.compile(r"(\*\*|~~)(?=\S)(.+?)(?<=\S)\1")
_STRONG_UNDERSCORE = re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")  # never inside a word: snake__case
_EM_STAR = re.compile(r"(?<![\w*\\])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*\\])\*(?![\w*])")
_EM_UNDERSCORE = re.compile(r"(?<![\w\\])_(?=[^\s_])([^_\n]+?)(?<=[^\s_\\])_(?!\w)")
_BACKTICKS = re.compile(r"`+")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~<>])")
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff]")
_H_SPACE = re.compile(r"[^\S\n]+")
_IMAGE_EXT = re.compile(r"\.(?:png|jpe?g|gif|svg|webp|bmp|tiff?|ico|image)$", re.IGNORECASE)
# Alt texts that say nothing about the picture (editors' defaults, screenshot names).
_GENERIC_ALT = re.compile(
    r"^(?:image|img|picture|pic|photo|screenshot|screen\s*shot|pasted\s*image|untitled|figure|fig|图片|图像|"
    r"截图|屏幕截图|插图|配图|图)?[\s_\-.\d]*(?:[0-9a-f]{8,}|[0-9a-f-]{32,})?[\s_\-.\d]*$",
    re.IGNORECASE,
)
_GENERIC_URL_SEGMENTS = frozenset({"home", "index", "main", "master", "default", "readme", "view", "detail"})
_URL_PAGE_EXT = re.compile(r"\.(?:html?|php|aspx?|jsp|shtml)$", re.IGNORECASE)


def meaningful_alt(alt: str) -> str:
    """An image's alt text when it describes something: "CLIP 训练过程.gif" -> "CLIP 训练过程"; "image.png" -> ""."""
    alt = _IMAGE_EXT.sub("", alt.strip()).strip()
    return "" if _GENERIC_ALT.match(alt) else alt


def shorten_url(url: str) -> str:
    """A URL reduced to what can match a question: host plus a readable last path segment.

    "https://github.com/lucidrains/denoising-diffusion-pytorch" -> "github.com denoising-diffusion-pytorch";
    opaque ids ("/p/593896912", image hashes) are dropped.
    """
    url = url.rstrip(".,;:!?'\")]")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").removeprefix("www.")
    except ValueError:  # malformed (e.g. a bad IPv6 literal): nothing worth indexing
        return ""
    segments = [segment for segment in parts.path.split("/") if segment]
    tail = ""
    if segments:
        last = _URL_PAGE_EXT.sub("", unquote(segments[-1]))
        letters = sum(ch.isalpha() for ch in last)
        looks_like_id = re.fullmatch(r"[0-9a-f\-~.]{8,}|[\w\-]*\d{5,}[\w\-]*", last, re.IGNORECASE)
        if (
            2 <= len(last) <= 60
            and letters >= 2
            and not looks_like_id
            and last.lower() not in _GENERIC_URL_SEGMENTS
        ):
            tail = last
    return f"{host} {tail}".strip()


def _img_tag(match: re.Match[str]) -> str:
    alt = _ALT_ATTR.search(match.group(1))
    return f" {meaningful_alt(alt.group(1) or alt.group(2) or '')} " if alt else " "


def _link(match: re.Match[str]) -> str:
    label = match.group(1).strip()
    if not label or _BARE_URL.fullmatch(label):
        return shorten_url(label or match.group(2))
    return label


def _unwrap_emphasis(text: str) -> str:
    previous = None
    while previous != text:  # nested emphasis ("***x***") needs more than one pass
        previous = text
        text = _STRONG.sub(r"\2", text)
        text = _STRONG_UNDERSCORE.sub(r"\1", text)
        text = _EM_STAR.sub(r"\1", text)
        text = _EM_UNDERSCORE.sub(r"\1", text)
    return text


def clean_for_index(text: str) -> str:
    """Markdown/HTML -> plain text for BM25 and the embedder.

    Drops images (keeping a meaningful alt text), HTML tags, link syntax (keeping the label), URLs (kept
    as host plus readable last segment), emphasis/heading/quote/bullet/table markup and control
    characters; collapses runs of spaces and blank lines.
    """
    text = _SCRIPT_STYLE.sub(" ", text)
    text = _HTML_COMMENT.sub(" ", text)
    text = _LINK_DEF.sub("", text)
    text = _IMAGE.sub(lambda m: f" {meaningful_alt(m.group(1))} ", text)
    text = _IMAGE_REF.sub(lambda m: f" {meaningful_alt(m.group(1))} ", text)
    text = _IMG_TAG.sub(_img_tag, text)
    text = _BLOCK_TAG.sub(" ", text)
    text = _TAG.sub("", text)
    text = _LINK.sub(_link, text)
    text = _LINK_REF.sub(r"\1", text)
    text = _AUTOLINK.sub(lambda m: shorten_url(m.group(1)), text)
    text = _BARE_URL.sub(lambda m: shorten_url(m.group(0)), text)
    text = _FENCE_LINE.sub("", text)
    text = _TABLE_DELIMITER.sub("", text)
    text = _TABLE_ROW.sub(lambda m: m.group(0).replace("|", " "), text)
    text = _RULE.sub("", text)
    text = _HEADING_LINE.sub(r"\1", text)
    text = _QUOTE_MARK.sub("", text)
    text = _BULLET_MARK.sub("", text)
    text = _unwrap_emphasis(text)
    text = _BACKTICKS.sub("", text)
    text = _ESCAPE.sub(r"\1", text)
    text = html.unescape(text)
    text = _INVISIBLE.sub("", text)
    # Control characters (NUL, ESC, ...) carry nothing; tabs and line breaks become plain whitespace.
    text = "".join(ch if unicodedata.category(ch) != "Cc" or ch == "\n" else " " for ch in text)
    text = _H_SPACE.sub(" ", text)
    return "\n".join(line.strip() for line in text.split("\n") if line.strip())
