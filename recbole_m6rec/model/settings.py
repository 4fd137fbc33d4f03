"""Each plugin model's settings, read once from RecBole's config and validated (RecBole returns None for a typo).

The model's yaml (``recbole_m6rec/properties/model/<Model>.yaml``, read by :class:`~recbole_m6rec.config.PluginConfig`)
is the only place that holds default values: a key missing from the config is an error naming that yaml.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from ..lm import ALL_TOKENS
from ..lm.segments import QUANTIZE_MODES

__all__ = ["M6RecSettings", "M6RecCTRSettings", "M6RecZeroShotSettings", "CATALOGUE_PRIOR", "LOSS_TYPES"]

CATALOGUE_PRIOR = "catalogue"  # unseen_item_prior: the share of catalogue items without a training interaction
LOSS_TYPES = ("CE", "inbatch", "BPR", "sampled_softmax")


def _choice(name: str, value, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)} (got {value!r})")
    return value


def _integer(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum} (got {value!r})")
    return value


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False (got {value!r})")
    return value


def _segment_tokens(value) -> int | str:
    """A positive int (pooled vectors per segment) or ``"all"`` (every token survives)."""
    if isinstance(value, str) and value.strip().lower() == ALL_TOKENS:
        return ALL_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"segment_tokens must be a positive integer or 'all' (got {value!r})")
    return value


def _quantize(value) -> str:
    """``none`` (also ``~``) or ``int8``."""
    if value is None:
        return "none"
    return _choice("quantize", value, QUANTIZE_MODES)


def _item_encoder_layers(value) -> int | None:
    """A positive int (the first k lower layers encode items) or None (all of them); the upper bound, the model's
    number of lower layers, is checked when the model is loaded."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"item_encoder_layers must be a positive integer (at most the lower layers) or ~ for all of them "
            f"(got {value!r})"
        )
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


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1) (got {value!r})")
    return float(value)


def _temperature(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"temperature must be > 0 (got {value!r})")
    return float(value)


def _recbole_negatives(value) -> dict | None:
    """RecBole's ``train_neg_sample_args`` as given (None when RecBole reads it as no sampling)."""
    if value is None or value == "None":
        return None
    if not isinstance(value, dict):
        raise ValueError(f"train_neg_sample_args must be a dict or ~ (got {value!r})")
    if value.get("distribution") in (None, "none", "None"):
        return None
    return dict(value)


def _check_negatives(loss_type: str, negatives: dict | None) -> None:
    """``loss_type`` and RecBole's sampled negatives agree: BPR takes them, every other loss takes none."""
    if loss_type != "BPR":
        if negatives is not None:
            own = (
                "sampled_softmax draws its own (softmax_negatives)"
                if loss_type == "sampled_softmax"
                else "use loss_type BPR for RecBole's sampled negatives"
            )
            raise ValueError(
                f"loss_type {loss_type} takes no negatives from RecBole's sampler (got train_neg_sample_args: "
                f"{negatives}); set train_neg_sample_args: ~ ({own})"
            )
        return
    if negatives is None:
        raise ValueError(
            "loss_type BPR needs RecBole's sampled negatives (got train_neg_sample_args: ~); set "
            "train_neg_sample_args: {distribution: uniform, sample_num: 1}"
        )
    if negatives.get("distribution") != "uniform":
        raise ValueError(
            f"loss_type BPR samples negatives uniformly (got train_neg_sample_args.distribution: "
            f"{negatives.get('distribution')!r}); valid: uniform (popularity sampling would need a logQ correction)"
        )
    num = negatives.get("sample_num")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"train_neg_sample_args.sample_num must be an integer >= 1 (got {num!r})")
    if negatives.get("dynamic", False):
        raise ValueError(
            f"loss_type BPR takes uniform negatives only (got train_neg_sample_args.dynamic: "
            f"{negatives.get('dynamic')!r}); valid: False"
        )


def _fields_list(name: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of field names (got {value!r})")
    return tuple(value)


@dataclass(frozen=True)
class M6RecSettings:
    """M6Rec's keys (``properties/model/M6Rec.yaml``); the item and user text keys usually come from the dataset's
    yaml (``datasets/<name>.yaml``)."""

    YAML: ClassVar[str] = "M6Rec.yaml"
    TUNING_MODES: ClassVar[tuple[str, ...]] = ("option_adapter", "prompt", "upper", "full")
    CHECKS_NEGATIVES: ClassVar[bool] = True  # loss_type and train_neg_sample_args must agree

    plm_name_or_path: str
    text_max_tokens: int
    late_interaction_layers: int
    segment_tokens: int | str
    encode_batch_size: int
    text_cache_dir: str | None
    item_encoder_layers: int | None
    quantize: str
    tuning: str
    adapter_rank: int
    item_adapter_rank: int
    attention_lora_rank: int
    n_prompt_tokens: int
    prompt_text: str
    embedding_size: int
    temperature: float
    item_tower: str
    use_profile: bool
    use_item_id_embedding: bool
    item_id_dropout: float
    popularity_bias: bool
    recency_words: bool
    loss_type: str
    softmax_negatives: int
    train_neg_sample_args: dict | None
    loss_items: str
    unseen_item_prior: float | str | None
    train_whole_sequences: bool
    window_stride: int | None
    warmup_steps: int
    lr_decay: str
    item_text_fields: tuple[str, ...]
    item_text_template: str | None
    user_text_fields: tuple[str, ...]
    user_text_template: str | None

    @classmethod
    def from_config(cls, config):
        """Every field from ``config`` (a missing key names the yaml that should have set it), validated."""
        raw = {}
        for field in fields(cls):
            if field.name not in config:
                raise ValueError(
                    f"{cls.__name__}: '{field.name}' is not in the config; its default lives in "
                    f"recbole_m6rec/properties/model/{cls._yaml_of(field.name)}, which PluginConfig reads for "
                    f"plugin models (build the config with PluginConfig(model=...), not RecBole's Config)"
                )
            raw[field.name] = config[field.name]
        return cls(**cls.validate(raw))

    @classmethod
    def _yaml_of(cls, name: str) -> str:
        """The yaml of the class that declares field ``name`` (a base class's keys live in the base's yaml)."""
        for klass in reversed(cls.__mro__):
            if name in getattr(klass, "__annotations__", {}) and "YAML" in vars(klass):
                return klass.YAML
        return cls.YAML

    @classmethod
    def validate(cls, raw: dict) -> dict:
        """Raw config values -> checked, normalised field values (ValueError names the value and what is valid)."""
        item_fields = _fields_list("item_text_fields", raw["item_text_fields"])
        if not item_fields:
            raise ValueError(
                "M6Rec needs item text: set item_text_fields (e.g. [movie_title, release_year, class]) in the dataset "
                "yaml or the config, and load those columns with load_col: {item: [...]}"
            )
        loss_type = _choice("loss_type", raw["loss_type"], LOSS_TYPES)
        negatives = _recbole_negatives(raw["train_neg_sample_args"])
        if cls.CHECKS_NEGATIVES:
            _check_negatives(loss_type, negatives)
        tuning = _choice("tuning", raw["tuning"], cls.TUNING_MODES)
        popularity_bias = _flag("popularity_bias", raw["popularity_bias"])
        if popularity_bias and loss_type != "CE":
            raise ValueError(
                f"popularity_bias adds a learned popularity term to the softmax over all items (loss_type CE); with "
                f"loss_type {loss_type} the loss would not train it (got popularity_bias: True): use loss_type CE, or "
                "set popularity_bias: False"
            )
        quantize = _quantize(raw["quantize"])
        if quantize == "int8" and tuning == "full":
            raise ValueError(
                "quantize int8 quantises frozen layers, but tuning full trains every layer (got quantize: int8 with "
                f"tuning: full); valid with int8: {', '.join(m for m in cls.TUNING_MODES if m != 'full')}"
            )
        if raw["attention_lora_rank"] and tuning in ("upper", "full"):
            raise ValueError(
                f"attention_lora_rank (got {raw['attention_lora_rank']!r}) adds low-rank updates to frozen attention, "
                f"but tuning {tuning} trains the attention itself; use it with "
                f"{', '.join(m for m in cls.TUNING_MODES if m not in ('upper', 'full'))}, or set it to 0"
            )
        return {
            **raw,
            "plm_name_or_path": str(raw["plm_name_or_path"]),
            "text_max_tokens": _integer("text_max_tokens", raw["text_max_tokens"]),
            "late_interaction_layers": _integer("late_interaction_layers", raw["late_interaction_layers"]),
            "segment_tokens": _segment_tokens(raw["segment_tokens"]),
            "encode_batch_size": _integer("encode_batch_size", raw["encode_batch_size"]),
            "item_encoder_layers": _item_encoder_layers(raw["item_encoder_layers"]),
            "quantize": quantize,
            "tuning": tuning,
            "adapter_rank": _integer("adapter_rank", raw["adapter_rank"]),
            "item_adapter_rank": _integer("item_adapter_rank", raw["item_adapter_rank"], minimum=0),
            "attention_lora_rank": _integer("attention_lora_rank", raw["attention_lora_rank"], minimum=0),
            "n_prompt_tokens": _integer("n_prompt_tokens", raw["n_prompt_tokens"], minimum=0),
            "prompt_text": str(raw["prompt_text"] or ""),
            "embedding_size": _integer("embedding_size", raw["embedding_size"]),
            "temperature": _temperature(raw["temperature"]),
            "item_tower": _choice("item_tower", raw["item_tower"], ("upper", "lower")),
            "use_profile": _flag("use_profile", raw["use_profile"]),
            "use_item_id_embedding": _flag("use_item_id_embedding", raw["use_item_id_embedding"]),
            "item_id_dropout": _probability("item_id_dropout", raw["item_id_dropout"]),
            "popularity_bias": popularity_bias,
            "recency_words": _flag("recency_words", raw["recency_words"]),
            "loss_type": loss_type,
            "softmax_negatives": _integer("softmax_negatives", raw["softmax_negatives"]),
            "train_neg_sample_args": negatives,
            "loss_items": _choice("loss_items", raw["loss_items"], ("all", "seen")),
            "unseen_item_prior": _unseen_item_prior(raw["unseen_item_prior"]),
            "train_whole_sequences": _flag("train_whole_sequences", raw["train_whole_sequences"]),
            "window_stride": None if raw["window_stride"] is None else _integer("window_stride", raw["window_stride"]),
            "warmup_steps": _integer("warmup_steps", raw["warmup_steps"], minimum=0),
            "lr_decay": _choice("lr_decay", raw["lr_decay"], ("none", "inverse_sqrt")),
            "item_text_fields": item_fields,
            "user_text_fields": _fields_list("user_text_fields", raw["user_text_fields"]),
        }

    @property
    def lower_is_frozen(self) -> bool:
        """The lower layers train only under ``full`` tuning; otherwise their segment states are cached."""
        return self.tuning != "full"

    @property
    def upper_is_frozen(self) -> bool:
        """The online layers' own weights train only under ``upper`` and ``full`` tuning (adapters are not theirs)."""
        return self.tuning not in ("upper", "full")


@dataclass(frozen=True)
class M6RecCTRSettings(M6RecSettings):
    """M6Rec's keys plus M6RecCTR's (``properties/model/M6RecCTR.yaml``, read after M6Rec.yaml)."""

    YAML: ClassVar[str] = "M6RecCTR.yaml"
    TUNING_MODES: ClassVar[tuple[str, ...]] = ("option_adapter", "option", "prompt", "upper", "full")
    CHECKS_NEGATIVES: ClassVar[bool] = False  # its option classifier ignores loss_type (RecBole negatives: label 0)

    option_words: tuple[str, ...]
    history_labels: bool

    @classmethod
    def validate(cls, raw: dict) -> dict:
        values = super().validate(raw)
        if values["unseen_item_prior"] is not None:
            raise ValueError(
                f"unseen_item_prior (got {raw['unseen_item_prior']!r}) re-weights M6Rec's softmax over all items; "
                "M6RecCTR scores each candidate alone with its option tokens: leave it at ~ (off)"
            )
        if values["window_stride"] is not None:
            raise ValueError(
                f"window_stride (got {raw['window_stride']!r}) overlaps M6Rec's training windows; M6RecCTR's windows "
                "tile the history: leave it at ~"
            )
        if values["popularity_bias"]:
            raise ValueError(
                "popularity_bias (got True) adds a popularity term to M6Rec's ranking softmax; M6RecCTR scores each "
                "candidate alone with its option tokens: leave it at False"
            )
        words = raw["option_words"]
        if (
            isinstance(words, str)
            or not isinstance(words, (list, tuple))
            or len(words) < 2
            or not all(isinstance(w, str) for w in words)
        ):
            raise ValueError(f"option_words needs at least 2 words, one per label (got {words!r})")
        return {
            **values,
            "option_words": tuple(words),
            "history_labels": _flag("history_labels", raw["history_labels"]),
        }


@dataclass(frozen=True)
class M6RecZeroShotSettings(M6RecSettings):
    """M6Rec's keys (the language model, item text, prompt) plus M6RecZeroShot's
    (``properties/model/M6RecZeroShot.yaml``, read after M6Rec.yaml)."""

    YAML: ClassVar[str] = "M6RecZeroShot.yaml"
    RETRIEVERS: ClassVar[tuple[str, ...]] = ("pop", "text")

    zero_shot_history: int
    zero_shot_batch_size: int
    zero_shot_rerank_top_k: int | None
    zero_shot_retriever: str

    @classmethod
    def validate(cls, raw: dict) -> dict:
        values = super().validate(raw)
        if values["popularity_bias"]:
            raise ValueError(
                "popularity_bias (got True) adds a learned popularity term to M6Rec's trained ranking; M6RecZeroShot "
                "trains nothing: leave it at False"
            )
        for name, default in (("quantize", "none"), ("item_encoder_layers", None)):
            if values[name] != default:
                raise ValueError(
                    f"{name} (got {raw[name]!r}) compresses M6Rec's and M6RecCTR's item encoding; M6RecZeroShot "
                    f"scores with the whole float language model: leave it at {default or '~'}"
                )
        top_k = raw["zero_shot_rerank_top_k"]
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"zero_shot_rerank_top_k must be a positive integer or ~ (got {top_k!r})")
        return {
            **values,
            "zero_shot_history": _integer("zero_shot_history", raw["zero_shot_history"]),
            "zero_shot_batch_size": _integer("zero_shot_batch_size", raw["zero_shot_batch_size"]),
            "zero_shot_retriever": _choice("zero_shot_retriever", raw["zero_shot_retriever"], cls.RETRIEVERS),
        }
