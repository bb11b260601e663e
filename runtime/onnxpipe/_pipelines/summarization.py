"""summarization: the text2text pipeline with transformers' output key and the model's summarization settings
(``task_specific_params["summarization"]``: T5's "summarize: " prefix, beam and length settings)."""

from __future__ import annotations

from .text2text_generation import Text2TextGenerationPipeline


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summarize texts: ``[{"summary_text": ...}]`` per input.

    Example:
        >>> summarizer = pipeline("summarization", model="models/distilbart-cnn-12-6")
        >>> summarizer("An apple a day, keeps the doctor away", min_length=5, max_length=20)
        [{'summary_text': '...'}]
    """

    task = "summarization"
    return_name = "summary"
