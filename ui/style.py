"""The page's own styles and the two scripts of our own (copy an answer, scroll the full note to the cited span).

The scripts carry no note or answer text: the copy button reads its text from an escaped HTML attribute, and
the scroll script only looks up a fixed element id. `html_escape` is the one escaping of untrusted text here.
"""

from __future__ import annotations

import re

from ui.render import html_escape

# --- page styling and the few scripts of our own ---------------------------------------------------------

# Highlight colours per theme: text and background are both set, so the contrast never depends on the theme's
# text colour (WCAG AA needs 4.5:1; light: about 14:1, dark: about 8:1).
HIGHLIGHT = {"light": ("#1a1a1a", "#ffe58a"), "dark": ("#fffbe6", "#6b5500")}


def page_css(theme: str | None) -> str:
    """The page's own styles: readable highlights, the full-note box, the copy button, a filled chosen thumb."""
    fg, bg = HIGHLIGHT["dark" if theme == "dark" else "light"]
    return f"""<style>
mark, .rag-note mark {{ background-color: {bg} !important; color: {fg} !important; padding: 0 .12em;
  border-radius: .2em; }}
.rag-note {{ max-height: 65vh; overflow-y: auto; white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.75;
  padding: .6rem .8rem; border: 1px solid rgba(128,128,128,.35); border-radius: .5rem; }}
.rag-note strong {{ font-size: 1.02em; }}
button.rag-copy {{ font: inherit; font-size: .875rem; background: transparent; color: inherit; cursor: pointer;
  border: 1px solid rgba(128,128,128,.4); border-radius: .5rem; padding: .15rem .6rem; }}
button.rag-copy:hover {{ border-color: currentColor; }}
[data-testid^="stFeedbackButton"][aria-checked="true"] [data-testid="stIconMaterial"] {{
  font-variation-settings: 'FILL' 1; color: #e8453c; }}
</style>"""


def copy_button_html(text: str, key: str) -> str:
    """A copy button carrying the answer's text in an escaped attribute; the script reads it from there."""
    ident = re.sub(r"[^A-Za-z0-9_-]", "", key)[:40] or "answer"
    return (
        f'<button type="button" class="rag-copy" id="copy-{ident}" data-copy="{html_escape(text)}" '
        'title="复制回答文字">📋 复制</button>' + _COPY_JS
    )


_COPY_JS = """<script>
(() => {
  const copy = async (button) => {
    const text = button.dataset.copy || "";
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      const area = document.createElement("textarea");
      area.value = text; area.setAttribute("readonly", ""); area.style.position = "fixed"; area.style.opacity = "0";
      document.body.appendChild(area); area.select(); document.execCommand("copy"); area.remove();
    }
    button.textContent = "✅ 已复制";
    setTimeout(() => { button.textContent = "📋 复制"; }, 1500);
  };
  document.querySelectorAll("button.rag-copy:not([data-bound])").forEach((button) => {
    button.dataset.bound = "1";
    button.addEventListener("click", () => copy(button));
  });
})();
</script>"""

SCROLL_TO_CITED_JS = """<script>
(() => {
  let tries = 0;
  const go = () => {
    const mark = document.getElementById("rag-cited");
    if (mark) { mark.scrollIntoView({block: "center"}); return; }
    if (++tries < 50) setTimeout(go, 100);
  };
  setTimeout(go, 50);
})();
</script>"""
