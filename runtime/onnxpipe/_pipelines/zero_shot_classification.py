"""zero-shot-classification: an NLI model scores "premise = text, hypothesis = template(label)" per label.

The entailment logit is found from the model's labels (the first that starts with "entail"), as transformers
finds it; each input becomes one premise/hypothesis pair per candidate label, batched like any other input.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding

from .._inputs import clean_text, clean_texts
from ._base import Pipeline
from ._text import softmax

log = logging.getLogger("onnxpipe")


class ZeroShotClassificationPipeline(Pipeline):
    """Candidate labels ranked per text: ``{'sequence', 'labels', 'scores'}`` (best first).

    Example:
        >>> classify = pipeline("zero-shot-classification", model="models/nli-deberta-v3-xsmall")
        >>> classify("I have a problem with my iphone that needs to be resolved asap!!",
        ...          candidate_labels=["urgent", "not urgent", "phone"])
        {'sequence': 'I have a problem ...', 'labels': ['urgent', 'phone', 'not urgent'], 'scores': [...]}
    """

    task = "zero-shot-classification"
    output_names = ("logits",)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        labels = self.model.labels
        self.entailment_id = next((i for i, name in sorted(labels.items()) if name.lower().startswith("entail")), -1)
        if self.entailment_id == -1:  # transformers then reads the last logit; say so instead of guessing silently
            log.warning(
                "no label of %s starts with 'entail' (labels: %s); using the last logit as entailment",
                self.model.manifest.folder,
                sorted(labels.values()),
            )

    def __call__(self, inputs: Any = None, *args: Any, sequences: Any = None, **kwargs: Any) -> Any:
        if sequences is not None:  # transformers' keyword for the inputs
            if inputs is not None:
                raise TypeError("pass the texts once: positionally or as sequences=, not both")
            inputs = sequences
        if inputs is None:
            raise TypeError("zero-shot-classification needs texts: pipe(texts, candidate_labels=[...])")
        if len(args) == 1 and "candidate_labels" not in kwargs:
            kwargs["candidate_labels"] = args[0]
        elif args:
            raise TypeError(f"unexpected positional arguments {args!r}; pass candidate_labels=[...]")
        return super().__call__(inputs, **kwargs)

    def set_defaults(self, **kwargs: Any) -> None:
        if kwargs.get("candidate_labels") is None:  # labels may come with each call; check the rest then
            self._defaults = dict(kwargs)
        else:
            super().set_defaults(**kwargs)

    def _normalize(self, inputs: Any) -> tuple[bool, list[Any]]:
        if isinstance(inputs, (list, tuple)) and not inputs:  # transformers' message, word for word
            raise ValueError("You must include at least one label and at least one sequence.")
        return super()._normalize(inputs)

    def _sanitize_parameters(
        self,
        candidate_labels: str | Sequence[str] | None = None,
        hypothesis_template: str = "This example is {}.",
        multi_label: bool | None = None,
        multi_class: bool | None = None,
        truncation: Any = True,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}; zero-shot-classification takes candidate_labels, "
                "hypothesis_template, multi_label, truncation (it cuts the text, never the label, at the model's "
                "maximum, as transformers, which ignores tokenizer arguments here)"
            )
        # transformers always cuts the premise only ("only_first") and ignores truncation=; the values that say
        # so are accepted, any other would be a promise neither library keeps
        if getattr(truncation, "value", truncation) not in (True, "only_first"):
            raise ValueError(
                f"truncation={truncation!r}: zero-shot-classification always cuts the text (the premise) and never "
                "the hypothesis holding the label, as transformers does; use truncation=True or 'only_first'"
            )
        if isinstance(candidate_labels, str):
            candidate_labels = [label.strip() for label in candidate_labels.split(",") if label.strip()]
        labels = clean_texts(list(candidate_labels or []), "candidate label")
        if not labels:
            raise ValueError("candidate_labels is empty; pass at least one label, e.g. candidate_labels=['a', 'b']")
        if hypothesis_template.format(labels[0]) == hypothesis_template:
            raise ValueError(
                f"hypothesis_template={hypothesis_template!r} has no {{}} where the label goes; "
                "use e.g. 'This example is {}.'"
            )
        multi = bool(multi_class if multi_label is None else multi_label)  # multi_class: transformers' old name
        return ({"labels": labels, "template": hypothesis_template}, {"labels": labels, "multi_label": multi})

    def preprocess(  # type: ignore[override]  # takes the labels and template, not truncation (never truncates them)
        self, items: Sequence[Any], offset: int, labels: Sequence[str] = (), template: str = ""
    ) -> list[tuple[str, list[Encoding]]]:
        texts = [clean_text(t, offset + i) for i, t in enumerate(items)]
        hypotheses = [template.format(label) for label in labels]
        premises = [t for t in texts for _ in hypotheses]
        pairs = hypotheses * len(texts)
        try:  # truncate the premise only, so the hypothesis (the label) stays whole
            encodings = self.tokenizer.encode_batch(premises, pairs, strategy="only_first")
        except Exception as e:
            if "too short" not in str(e):
                raise
            # A hypothesis too long to keep any premise: as transformers, that pair goes untruncated.
            encodings = []
            for premise, pair in zip(premises, pairs):
                try:
                    encodings += self.tokenizer.encode_batch([premise], [pair], strategy="only_first")
                except Exception:
                    encodings += self.tokenizer.encode_batch([premise], [pair], truncation=False)
        n = len(hypotheses)
        return [(text, encodings[i * n : (i + 1) * n]) for i, text in enumerate(texts)]

    def gather(  # type: ignore[override]  # takes only the gather params its _sanitize_parameters returns
        self,
        text: str,
        encodings: list[Encoding],
        rows: list[dict[str, np.ndarray]],
        labels: Sequence[str] = (),
        multi_label: bool = False,
    ) -> dict[str, Any]:
        logits = np.stack([row["logits"] for row in rows]).astype(np.float32)  # (labels, NLI classes)
        if multi_label or len(labels) == 1:
            contradiction_id = -1 if self.entailment_id == 0 else 0
            scores = softmax(logits[:, [contradiction_id, self.entailment_id]])[:, 1]
        else:
            scores = softmax(logits[:, self.entailment_id])
        order = list(reversed(scores.argsort()))
        return {"sequence": text, "labels": [labels[i] for i in order], "scores": scores[order].tolist()}
