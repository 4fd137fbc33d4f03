"""Dataset -> strings: item and user texts aligned to RecBole internal ids, and recency phrases."""

from .item_text import PAD_TEXT, build_item_texts, build_user_texts, render_template

__all__ = ["PAD_TEXT", "build_item_texts", "build_user_texts", "render_template"]
