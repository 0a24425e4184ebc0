"""PixArt prompts as the diffusers PixArt pipelines prepare them: caption cleaning, truncation to the family's
token count (PixArt-α 120, PixArt-Σ 300), padding dropped. No ComfyUI."""
from __future__ import annotations

import html
import re
import urllib.parse as ul

FAMILY_TOKENS = {"alpha": 120, "sigma": 300}

# diffusers' PixArt pipelines clean captions with this procedure (from DeepFloyd IF). It is ported rather than
# imported because diffusers is not a ComfyUI dependency; tests check it against diffusers' own method.
_BAD_PUNCT = re.compile(r"[" + "#®•©™&@·º½¾¿¡§~" + r"\)" + r"\(" + r"\]" + r"\[" + r"\}" + r"\{" + r"\|"
                        + "\\" + r"\/" + r"\*" + r"]{1,}")


def clean_caption(caption: str) -> str:
    from bs4 import BeautifulSoup
    import ftfy

    c = ul.unquote_plus(str(caption)).strip().lower()
    c = re.sub("<person>", "person", c)
    c = re.sub(r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))", "", c)
    c = re.sub(r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.](?:com|co|ru|net|org|edu|gov|it)[\w/-]*\b\/?(?!@)))", "", c)
    c = BeautifulSoup(c, features="html.parser").text
    c = re.sub(r"@[\w\d]+\b", "", c)
    for lo, hi in (("31c0", "31ef"), ("31f0", "31ff"), ("3200", "32ff"), ("3300", "33ff"), ("3400", "4dbf"),
                   ("4dc0", "4dff"), ("4e00", "9fff")):  # CJK blocks
        c = re.sub(f"[\\u{lo}-\\u{hi}]+", "", c)
    c = re.sub(r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0"
               r"\uFE31\uFE32\uFE58\uFE63\uFF0D]+", "-", c)
    c = re.sub(r"[`´«»“”¨]", '"', c)
    c = re.sub(r"[‘’]", "'", c)
    c = re.sub(r"&quot;?", "", c)
    c = re.sub(r"&amp", "", c)
    c = re.sub(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " ", c)
    c = re.sub(r"\d:\d\d\s+$", "", c)
    c = re.sub(r"\\n", " ", c)
    c = re.sub(r"#\d{1,3}\b", "", c)
    c = re.sub(r"#\d{5,}\b", "", c)
    c = re.sub(r"\b\d{6,}\b", "", c)
    c = re.sub(r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", "", c)
    c = re.sub(r"[\"\']{2,}", r'"', c)
    c = re.sub(r"[\.]{2,}", r" ", c)
    c = re.sub(_BAD_PUNCT, r" ", c)
    c = re.sub(r"\s+\.\s+", r" ", c)
    dash = re.compile(r"(?:\-|\_)")
    if len(re.findall(dash, c)) > 3:
        c = re.sub(dash, " ", c)
    c = ftfy.fix_text(c)
    c = html.unescape(html.unescape(c))
    c = re.sub(r"\b[a-zA-Z]{1,3}\d{3,15}\b", "", c)
    c = re.sub(r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", "", c)
    c = re.sub(r"\b\d+[a-zA-Z]+\d+\b", "", c)
    c = re.sub(r"(worldwide\s+)?(free\s+)?shipping", "", c)
    c = re.sub(r"(free\s)?download(\sfree)?", "", c)
    c = re.sub(r"\bclick\b\s(?:for|on)\s\w+", "", c)
    c = re.sub(r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", "", c)
    c = re.sub(r"\bpage\s+\d+\b", "", c)
    c = re.sub(r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" ", c)
    c = re.sub(r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", "", c)
    c = re.sub(r"\b\s+\:\s+", r": ", c)
    c = re.sub(r"(\D[,\./])\b", r"\1 ", c)
    c = re.sub(r"\s+", " ", c)
    c = re.sub(r"^[\"\']([\w\W]+)[\"\']$", r"\1", c)
    c = re.sub(r"^[\'\_,\-\:;]", r"", c)
    c = re.sub(r"[\'\_,\-\:\-\+]$", r"", c)
    c = re.sub(r"^\.\S+$", "", c)
    return c.strip()


def preprocess_prompt(text: str, clean: bool) -> str:
    """What diffusers' PixArt pipelines do to a prompt before tokenizing (`_text_preprocessing`)."""
    if clean:
        return clean_caption(clean_caption(text))
    return text.lower().strip()


def prompt_token_ids(tokenizer, text: str, max_tokens: int, clean: bool) -> list[int]:
    """The tokens diffusers feeds T5 with mask 1: at most max_tokens, the end token included; padding dropped."""
    return list(tokenizer(preprocess_prompt(text, clean), truncation=True, max_length=max_tokens,
                          add_special_tokens=True)["input_ids"])


def max_tokens_for(family: str, max_tokens: int = 0) -> int:
    if max_tokens and max_tokens > 0:
        return int(max_tokens)
    try:
        return FAMILY_TOKENS[family]
    except KeyError:
        raise ValueError(f"family {family!r}: expected one of {', '.join(FAMILY_TOKENS)}") from None
