"""The fixed prompt and the generator that writes explanations (greedy decoding, so the same input gives the same
text).

The prompt shows the user's most recent history items and the recommended item, each as the item text M6Rec itself
reads (:func:`recbole_m6rec.text.build_item_texts` with the checkpoint's ``item_text_fields`` and template), and asks
for one or two sentences that name watched items. Of four wordings tried on a hand-made history (never on the users a
report measures), this one made SmolLM2-135M-Instruct write explanations rather than echo the list. An instruct model gets it through its own chat template (a
system and a user message); a model without one (the tiny test models) gets the same two messages as plain text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from recbole_m6rec.lm import is_generative, load_plm

__all__ = ["SYSTEM_PROMPT", "USER_PROMPT", "Generator", "prompt_messages"]

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = "You explain {noun} recommendations in one or two sentences."
USER_PROMPT = (
    "A user watched these {noun}s, most recent last:\n{history}\n\nWe recommend: {candidate}\n"
    "In one or two sentences, explain why this {noun} fits the user, naming {noun}s they watched."
)


def prompt_messages(history: Sequence[str], candidate: str, noun: str = "movie") -> list[dict]:
    """The chat messages for one explanation: ``history`` (oldest first) and ``candidate`` are item texts."""
    listed = "\n".join(f"- {text}" for text in history)
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(noun=noun)},
        {"role": "user", "content": USER_PROMPT.format(history=listed, candidate=candidate, noun=noun)},
    ]


class Generator:
    """A generative language model (``plm``: a name :func:`~recbole_m6rec.lm.load_plm` knows, or a local folder)
    that answers batches of prompts greedily, counting the tokens it writes and the seconds it takes."""

    def __init__(self, plm: str, max_new_tokens: int = 60):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
        self.plm, self.max_new_tokens = plm, max_new_tokens
        self.tokenizer, self.model = load_plm(plm)
        if not is_generative(self.model):
            raise ValueError(
                f"plm {plm!r} is an encoder ({type(self.model).__name__}) and cannot write text; use a generative "
                "model, e.g. 'smollm2-135m' (the default) or 'tiny-random-llama'"
            )
        self.tokenizer.padding_side = "left"  # a batch's prompts end where generation starts
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self.tokens_written = 0
        self.seconds = 0.0

    def render(self, messages: list[dict]) -> str:
        """The prompt text: the model's chat template, or plain "System:/User:/Assistant:" lines without one."""
        if self.chat:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n\n".join([*lines, "Assistant:"])

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> list[str]:
        """One answer per prompt text (already rendered), decoded without special tokens."""
        tokenizer = self.tokenizer
        encoded = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        length = encoded["input_ids"].shape[1]
        if self.max_positions and length + self.max_new_tokens > self.max_positions:
            raise ValueError(
                f"a prompt of {length} tokens plus max_new_tokens={self.max_new_tokens} exceeds the {self.max_positions} "
                f"positions of {self.plm!r}; show fewer history items (history_items) or write fewer tokens"
            )
        device = next(self.model.parameters()).device
        started = time.perf_counter()
        output = self.model.generate(
            input_ids=encoded["input_ids"].to(device),  # not token_type_ids, which BERT-style tokenizers add
            attention_mask=encoded["attention_mask"].to(device),
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        self.seconds += time.perf_counter() - started
        answers = []
        for row in output[:, length:]:
            kept = row[row != tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else row
            self.tokens_written += int(len(kept))
            answers.append(" ".join(tokenizer.decode(kept, skip_special_tokens=True).split()))
        return answers

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_written / self.seconds if self.seconds else 0.0
