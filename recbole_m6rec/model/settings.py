"""M6Rec's own settings, read once from RecBole's config and validated (RecBole returns None for a typo)."""

from __future__ import annotations

from dataclasses import dataclass

from .segments import parse_segment_tokens

__all__ = ["M6RecSettings", "TUNING_MODES", "LOSS_TYPES", "ITEM_TOWERS", "CATALOGUE_PRIOR"]

TUNING_MODES = ("option_adapter", "prompt", "upper", "full")  # M6RecCTR adds "option" (it has option tokens)
LOSS_TYPES = ("CE", "inbatch")
ITEM_TOWERS = ("upper", "lower")
LOSS_ITEMS = ("all", "seen")
CATALOGUE_PRIOR = "catalogue"  # unseen_item_prior: the share of catalogue items without a training interaction


def _choice(name: str, value, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)} (got {value!r})")
    return value


def _unseen_item_prior(value) -> float | str | None:
    if value is None or value == CATALOGUE_PRIOR:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(
            f"unseen_item_prior must be a probability strictly between 0 and 1, '{CATALOGUE_PRIOR}' (the share of "
            f"items without a training interaction) or ~ for off (got {value!r})"
        )
    return float(value)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return value


@dataclass(frozen=True)
class M6RecSettings:
    plm_name_or_path: str
    text_max_tokens: int
    late_interaction_layers: int
    segment_tokens: int | str
    encode_batch_size: int
    text_cache_dir: str | None
    tuning: str
    adapter_rank: int
    n_prompt_tokens: int
    prompt_text: str
    embedding_size: int
    temperature: float
    item_tower: str
    use_profile: bool
    use_item_id_embedding: bool
    loss_type: str
    loss_items: str
    unseen_item_prior: float | str | None
    train_whole_sequences: bool
    recency_words: bool
    item_text_fields: tuple[str, ...]
    item_text_template: str | None
    user_text_fields: tuple[str, ...]
    user_text_template: str | None

    @classmethod
    def from_config(cls, config, tuning_modes: tuple[str, ...] = TUNING_MODES) -> "M6RecSettings":
        def get(key, default=None):
            value = config[key] if key in config else None
            return default if value is None else value

        item_fields = tuple(get("item_text_fields", ()))
        if not item_fields:
            raise ValueError(
                "M6Rec needs item text: set item_text_fields (e.g. [movie_title, release_year, class]) in the dataset "
                "yaml or the config, and load those columns with load_col: {item: [...]}"
            )
        temperature = float(get("temperature", 0.07))
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0 (got {temperature!r})")
        return cls(
            plm_name_or_path=str(get("plm_name_or_path", "smollm2-135m")),
            text_max_tokens=_positive_int("text_max_tokens", get("text_max_tokens", 32)),
            late_interaction_layers=_positive_int("late_interaction_layers", get("late_interaction_layers", 2)),
            segment_tokens=parse_segment_tokens(get("segment_tokens", 1)),
            encode_batch_size=_positive_int("encode_batch_size", get("encode_batch_size", 64)),
            text_cache_dir=get("text_cache_dir"),
            tuning=_choice("tuning", get("tuning", "option_adapter"), tuning_modes),
            adapter_rank=_positive_int("adapter_rank", get("adapter_rank", 64)),
            n_prompt_tokens=_positive_int("n_prompt_tokens", get("n_prompt_tokens", 8), minimum=0),
            prompt_text=str(get("prompt_text", "")),
            embedding_size=_positive_int("embedding_size", get("embedding_size", 128)),
            temperature=temperature,
            item_tower=_choice("item_tower", get("item_tower", "upper"), ITEM_TOWERS),
            use_profile=bool(get("use_profile", True)),
            use_item_id_embedding=bool(get("use_item_id_embedding", False)),
            loss_type=_choice("loss_type", get("loss_type", "CE"), LOSS_TYPES),
            loss_items=_choice("loss_items", get("loss_items", "all"), LOSS_ITEMS),
            unseen_item_prior=_unseen_item_prior(get("unseen_item_prior")),
            train_whole_sequences=bool(get("train_whole_sequences", True)),
            recency_words=bool(get("recency_words", False)),
            item_text_fields=item_fields,
            item_text_template=get("item_text_template"),
            user_text_fields=tuple(get("user_text_fields", ())),
            user_text_template=get("user_text_template"),
        )
