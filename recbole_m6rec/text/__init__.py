"""Item and user texts aligned to RecBole internal ids, and their tokenisation."""

from .item_text import PAD_TEXT, build_item_texts, build_user_texts, render_template
from .tokenize import TokenizedTexts, tokenize_texts

__all__ = ["PAD_TEXT", "build_item_texts", "build_user_texts", "render_template", "TokenizedTexts", "tokenize_texts"]
