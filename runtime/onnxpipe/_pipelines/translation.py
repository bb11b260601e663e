"""translation and translation_xx_to_yy: the text2text pipeline with transformers' output key; the task name's
``task_specific_params`` entry (T5's "translate English to German: " prefix) applies, and plain "translation"
takes the model's first translation entry, as in transformers. ``src_lang`` / ``tgt_lang`` are accepted and,
as for transformers' single-pair models, change nothing (multilingual tokenizers are not supported here)."""

from __future__ import annotations

from .text2text_generation import Text2TextGenerationPipeline


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translate texts: ``[{"translation_text": ...}]`` per input.

    Example:
        >>> translator = pipeline("translation_en_to_de", model="models/t5-small")
        >>> translator("How old are you?")
        [{'translation_text': 'Wie alt sind Sie?'}]
    """

    task = "translation"
    return_name = "translation"
