"""AutoTokenizer: transformers' call shape on top of the Rust ``tokenizers`` library.

This module is the surface (arguments as transformers takes them, outputs as it returns them, vocabulary and
special tokens); the rules underneath (frozen truncation copies, the bounds on a huge input, truncation errors,
the pipelines' numpy padding, overflow windows) are ``_encoder.py``'s. A direct call pads each call's own
fresh encodings with the Rust ``Encoding.pad``, so ``.encodings`` match transformers'. What transformers lets
users set (pad_token, padding_side, model_max_length) are plain attributes here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from ._batch_encoding import BatchEncoding
from ._encoder import Encoder, call_truncation, check_split_into_words, overflow_rows, pad_encodings
from ._inputs import as_text_list, clean_text, clean_texts, clean_words, int_option
from ._manifest import Manifest, load_manifest, safe_path
from ._resolve import resolve_model
from .errors import IntegrityError, ModelLoadError

# transformers' PreTrainedTokenizerBase.clean_up_tokenization, in order.
_CLEANUPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_SPECIALS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
_FROZEN = (
    "{what}: the exported tokenizer cannot grow (the model's embedding matrix has one row per token); add "
    "tokens to the checkpoint with transformers, resize its embeddings, and export it again. Setting the pad token to "
    "a token of the vocabulary works: tokenizer.pad_token = tokenizer.eos_token"
)
# transformers' from_pretrained arguments about where files come from: no effect on a local exported folder
_LOADING_ARGS = ("revision", "cache_dir", "local_files_only", "token", "trust_remote_code", "force_download")


def clean_up(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop the space before punctuation and English contractions."""
    for a, b in _CLEANUPS:
        text = text.replace(a, b)
    return text


_MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")  # transformers' order


def _side(side: Any) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"padding_side={side!r}: use 'right' or 'left'")
    return str(side)


class AutoTokenizer:
    """Tokenizer of a model folder, called like transformers' tokenizers.

    Example:
        >>> tok = AutoTokenizer.from_pretrained("minilm-sst2")
        >>> tok(["I hate this so much!"], padding=True, truncation=True, return_tensors="np")["input_ids"]
        array([[ 101, 1045, 5223, 2023, 2061, 2172,  999,  102]])
    """

    def __init__(
        self,
        tokenizer_json: str,
        max_length: int,
        input_names: Sequence[str],
        pad_token_id: int = 0,
        config: dict[str, Any] | None = None,
    ):
        self.model_max_length = int(max_length)
        self.model_input_names = [n for n in _MODEL_INPUTS if n in input_names]
        self._pad_id = int(pad_token_id)  # pads model inputs; pad_token_id is None where the tokenizer has no pad
        self.config = dict(config or {})  # the manifest's tokenizer_config: special tokens, clean-up flag
        self.name_or_path = ""  # the model folder, once loaded from one
        self._encoder = Encoder.from_json(tokenizer_json, self.model_max_length)
        self._base = self._encoder.base

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        verify: bool = True,
        *,
        use_fast: bool = True,
        padding_side: str | None = None,
        model_max_length: int | None = None,
        **kwargs: Any,
    ) -> AutoTokenizer:
        """Load the tokenizer of a model folder (a path, or a name such as ``"minilm-sst2"``).

        transformers' loading arguments: ``padding_side`` and ``model_max_length`` set those; the ones about
        where files come from (``revision``, ``cache_dir``, ``local_files_only``, ``token``,
        ``trust_remote_code``) have no effect on a local exported folder; the ones that would change how text is
        tokenized (``do_lower_case``, ``add_prefix_space``...) raise, since the exported tokenizer is frozen."""
        for name in _LOADING_ARGS:  # no effect: the folder is local and already exported
            kwargs.pop(name, None)
        if kwargs:
            raise TypeError(
                f"AutoTokenizer.from_pretrained got {sorted(kwargs)}: the exported tokenizer.json is frozen (the "
                "export validated the model with it), so settings that change tokenization are not taken; export "
                "from a checkpoint whose tokenizer was saved with them. Taken: padding_side, model_max_length, "
                f"use_fast=True, and (no effect here) {', '.join(_LOADING_ARGS)}"
            )
        if use_fast is not True:
            raise ValueError("use_fast=False: onnxpipe has only the fast (Rust) tokenizer, which the export validated")
        tokenizer = cls.from_manifest(load_manifest(resolve_model(name_or_path), verify=verify))
        if padding_side is not None:
            tokenizer.padding_side = padding_side
        if model_max_length is not None:
            tokenizer.model_max_length = int_option("model_max_length", model_max_length)
        return tokenizer

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> AutoTokenizer:
        path = safe_path(manifest.folder, manifest.tokenizer)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IntegrityError(f"{path} is missing; {manifest.hint()}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"cannot read {path} ({e}); {manifest.hint()}") from e
        try:
            config = dict(manifest.tokenizer_config) if manifest.tokenizer_config else None
            tokenizer = cls(text, manifest.max_length, manifest.inputs, manifest.pad_token_id, config)
        except Exception as e:  # tokenizers raises a bare Exception for JSON it cannot parse
            raise ModelLoadError(f"the tokenizers library rejected {path}: {e}; {manifest.hint()}") from e
        tokenizer.name_or_path = str(manifest.folder)
        return tokenizer

    def warm_up(self) -> None:
        """Build now the untruncated copy that the first text longer than the model's maximum (or the first
        ``tokenize``) would otherwise build mid-request (~35 ms of the GIL for a BERT vocabulary)."""
        self._encoder.copy_for(None)

    def __getstate__(self) -> dict[str, Any]:
        # The lock cannot be pickled and the copies are caches: send the base tokenizer (tokenizers pickles it
        # as JSON) and rebuild the rest on the other side, so a tokenizer can go to worker processes.
        return {
            "base": self._base,
            "model_max_length": self.model_max_length,
            "model_input_names": self.model_input_names,
            "pad_token_id": self._pad_id,
            "config": self.config,
            "name_or_path": self.name_or_path,
            "padding_side": self.padding_side,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(
            model_max_length=state["model_max_length"],
            model_input_names=state["model_input_names"],
            _pad_id=state["pad_token_id"],
            _base=state["base"],
            config=state.get("config", {}),
            name_or_path=state.get("name_or_path", ""),
            _padding_side=state.get("padding_side", "right"),
        )
        # Filed under the length the base truncates at: model_max_length may have been changed since it was built
        # (filed under the new one, the copy for it would cut at the old one).
        cut = (self._base.truncation or {}).get("max_length", self.model_max_length)
        self._encoder = Encoder(self._base, int(cut))

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (truncating at the model maximum). Do not reconfigure it."""
        return self._base

    backend_tokenizer = backend  # transformers' name for it
    is_fast = True  # a Rust tokenizer, as transformers' fast tokenizers (offsets, word_ids)

    def encode_batch(
        self,
        texts: Sequence[Any],
        pairs: Sequence[Any | None] | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int = 0,
        strategy: str = "longest_first",
        bounded: bool = False,
        add_special_tokens: bool = True,
        is_pretokenized: bool = False,
        offset: int = 0,
    ) -> list[Encoding]:
        """Encode texts (and pairs: None where a text has none); with ``is_pretokenized`` each text is a list of
        words. ``bounded=True``, for callers that never read ``Encoding.overflowing``: a truncated text is encoded
        from its start only, so one huge input cannot take gigabytes (for a pair, the overflow the Rust tokenizer
        keeps grows with the product of both lengths: 1.2 GB for two texts of 60,000 characters). The kept
        tokens are the same, except that when a text of a pair is cut, which of the two gets the odd token of an
        odd budget is decided on the cut text (transformers gives it to the longer one): a difference of one
        token at the end of each segment, only for pairs with a text of more than 32 x max_length characters.

        A strategy that cannot cut an input ("only_second" without a pair, or a pair whose text to cut is too
        short) raises InputTooLongError naming the input (``offset`` + its index), where transformers raises the
        Rust tokenizer's bare ``Exception``."""
        if max_length is None and not stride:
            limit = self.model_max_length if truncation else None
        elif truncation:
            limit = self._encoder.limit(max_length, stride, pairs is not None, self.model_max_length)
        else:
            limit = None
        return self._encoder.encode(
            texts, pairs, limit, stride, strategy, bounded, add_special_tokens, is_pretokenized, offset
        )

    def pad(
        self, encoded_inputs: Any, padding: Any = True, *, pad_to: int | None = None, **kwargs: Any
    ) -> BatchEncoding:
        """Right-pad ``Encoding``s into int64 arrays, to the longest one or to ``pad_to`` (the pipelines' batches).

        Given what the tokenizer returned instead (a dict of lists, or a list of such dicts), pad it as
        transformers' ``tokenizer.pad`` does: ``padding``, ``max_length``, ``pad_to_multiple_of``,
        ``padding_side``, ``return_attention_mask``, ``return_tensors`` (None: lists; "np")."""
        internal = isinstance(encoded_inputs, (list, tuple)) and (
            not encoded_inputs or isinstance(encoded_inputs[0], Encoding)
        )
        if not internal:
            return self._pad_features(encoded_inputs, padding, **kwargs)
        return pad_encodings(encoded_inputs, self._pad_id, self.model_input_names, pad_to)

    def _pad_features(
        self,
        features: Any,
        padding: Any = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """transformers' ``tokenizer.pad`` of tokenizer outputs: input_ids, attention_mask (made if missing),
        token_type_ids and special_tokens_mask are padded; other keys are left as they are."""
        if return_tensors not in (None, "np"):
            raise ValueError(f"return_tensors={return_tensors!r}: onnxpipe returns lists or numpy ('np') only")
        if isinstance(features, (list, tuple)) and features and isinstance(features[0], dict):
            features = {k: [f[k] for f in features] for k in features[0]}
        if not isinstance(features, dict) or "input_ids" not in features:
            raise ValueError("pad() takes tokenizer outputs: a dict with input_ids, or a list of such dicts")
        single = bool(features["input_ids"]) and not isinstance(features["input_ids"][0], (list, tuple, np.ndarray))
        rows = {k: [np.asarray(v).tolist() for v in ([vs] if single else vs)] for k, vs in features.items()}
        if return_attention_mask or (return_attention_mask is None and "attention_mask" in self.model_input_names):
            rows.setdefault("attention_mask", [[1] * len(ids) for ids in rows["input_ids"]])
        padding = getattr(padding, "value", padding)
        if padding in (True, "longest"):
            width: int | None = max((len(ids) for ids in rows["input_ids"]), default=0)
        elif padding == "max_length":
            width = max_length or self.model_max_length
        elif padding in (False, "do_not_pad"):
            width = None
        else:
            raise ValueError(f"padding={padding!r}: use True/'longest', 'max_length' or False")
        if width is not None:
            self._check_pad()
        if width is not None and pad_to_multiple_of and width % pad_to_multiple_of:
            width += pad_to_multiple_of - width % pad_to_multiple_of
        left = _side(padding_side or self.padding_side) == "left"
        fills = {"input_ids": self._pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
        for key, fill in fills.items():
            if key in rows and width is not None:
                rows[key] = [
                    ([fill] * (width - len(r)) + r if left else r + [fill] * (width - len(r))) if len(r) < width else r
                    for r in rows[key]
                ]
        out = BatchEncoding((k, v[0] if single else v) for k, v in rows.items())
        if return_tensors == "np":
            if not single and len({len(r) for r in out["input_ids"]}) > 1:
                raise ValueError("inputs have different lengths; pass padding=True to return_tensors='np'")
            out = BatchEncoding((k, np.array(v, dtype=np.int64)) for k, v in out.items())
        return out

    # transformers' settings of where padding and truncation go; onnxpipe pads either side, truncates the end
    @property
    def padding_side(self) -> str:
        return str(self.__dict__.get("_padding_side", "right"))

    @padding_side.setter
    def padding_side(self, side: str) -> None:
        self.__dict__["_padding_side"] = _side(side)

    @property
    def truncation_side(self) -> str:
        return "right"

    @truncation_side.setter
    def truncation_side(self, side: str) -> None:
        if side != "right":
            raise ValueError(
                f"truncation_side={side!r}: the exported tokenizer truncates at the end ('right') only; cut the "
                "start of the text yourself before encoding it"
            )

    def __call__(
        self,
        text: Any,
        text_pair: Any = None,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
        return_offsets_mapping: bool = False,
        return_attention_mask: bool | None = None,
        return_token_type_ids: bool | None = None,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        return_overflowing_tokens: bool = False,
        verbose: bool = True,
        padding_side: str | None = None,
        **unsupported: Any,
    ) -> BatchEncoding:
        """Encode a text, a list of texts, or pairs (``text_pair``), as transformers' fast tokenizers do: lists
        without ``return_tensors``, int64 arrays with ``return_tensors="np"``. ``is_split_into_words=True``
        takes a list of words (or a list of such lists); ``return_overflowing_tokens=True`` returns every
        window of ``max_length`` tokens (``stride`` tokens of overlap), one row each, with
        ``overflow_to_sample_mapping``. ``verbose`` is accepted and has no effect (nothing is logged).

        Example:
            >>> tok(["Hello", "world"], is_split_into_words=True).word_ids()
            [None, 0, 1, None]
        """
        if unsupported:
            raise TypeError(
                f"unsupported tokenizer arguments {sorted(unsupported)}; supported: text_pair, padding, "
                "truncation, max_length, stride, is_split_into_words, pad_to_multiple_of, return_tensors, "
                "add_special_tokens, return_offsets_mapping, return_attention_mask, return_token_type_ids, "
                "return_special_tokens_mask, return_overflowing_tokens, return_length, padding_side"
            )
        if return_tensors not in (None, "np"):
            raise ValueError(
                f"return_tensors={return_tensors!r}: onnxpipe runs without torch/tensorflow and returns "
                "numpy only; use return_tensors='np' (the models take numpy arrays)"
            )
        if max_length is not None:  # 0 or -1 would otherwise mean "the model maximum" or an OverflowError
            int_option("max_length", max_length, 1, None, "or None for the model maximum")
        # transformers' TruncationStrategy / PaddingStrategy enums stand for their values
        truncation, padding = getattr(truncation, "value", truncation), getattr(padding, "value", padding)
        if pad_to_multiple_of is not None:
            int_option("pad_to_multiple_of", pad_to_multiple_of, 1, None)
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding={padding!r}: use True/'longest', 'max_length' or False")
        single, texts, pairs = self._inputs(text, text_pair, is_split_into_words)
        truncate, strategy = call_truncation(truncation, max_length, padding)
        pad = padding not in (False, "do_not_pad")
        width = (max_length or self.model_max_length) if padding == "max_length" else None
        cut = max_length or self.model_max_length
        if pad and truncate and pad_to_multiple_of and cut % pad_to_multiple_of:
            raise ValueError(  # transformers' check, word for word
                f"Truncation and padding are both activated but truncation length ({cut}) is not a multiple of "
                f"pad_to_multiple_of ({pad_to_multiple_of})."
            )
        # bounded unless the overflow is returned (a pair's overflow grows with the product of the lengths)
        encodings = self.encode_batch(
            texts,
            pairs,
            truncation=truncate,
            max_length=max_length,
            stride=stride,
            bounded=not return_overflowing_tokens,
            strategy=strategy,
            add_special_tokens=add_special_tokens,
            is_pretokenized=is_split_into_words,
        )
        if pad:  # the Rust way, in place (overflow windows too), so .encodings are padded as transformers'
            self._check_pad()
            longest = max((len(e.ids) for e in encodings), default=0)
            width = longest if width is None else width
            if pad_to_multiple_of and width % pad_to_multiple_of:
                width += pad_to_multiple_of - width % pad_to_multiple_of
            pad_token, side = self._special("pad") or "", _side(padding_side or self.padding_side)
            for e in encodings:
                e.pad(width, direction=side, pad_id=self._pad_id, pad_token=pad_token)
        rows, mapping = overflow_rows(encodings) if return_overflowing_tokens else (encodings, None)
        fields: dict[str, Any] = {"input_ids": lambda e: e.ids}
        if return_token_type_ids or (return_token_type_ids is None and "token_type_ids" in self.model_input_names):
            fields["token_type_ids"] = lambda e: e.type_ids
        if return_attention_mask or (return_attention_mask is None and "attention_mask" in self.model_input_names):
            fields["attention_mask"] = lambda e: e.attention_mask
        if return_special_tokens_mask:
            fields["special_tokens_mask"] = lambda e: e.special_tokens_mask
        if return_offsets_mapping:
            fields["offset_mapping"] = lambda e: e.offsets
        if return_length:
            fields["length"] = lambda e: len(e.ids)
        out = BatchEncoding((k, [get(e) for e in rows]) for k, get in fields.items())
        if mapping is not None:
            out["overflow_to_sample_mapping"] = mapping
        if return_tensors == "np":
            if len({len(e.ids) for e in rows}) > 1:
                raise ValueError("inputs have different lengths; pass padding=True to return_tensors='np'")
            out = BatchEncoding((k, np.array(v, dtype=np.int64)) for k, v in out.items())
            if not rows:  # no texts: (0, 0) arrays, which the models take (they answer with zero rows)
                shapes = {"length": (0,), "overflow_to_sample_mapping": (0,), "offset_mapping": (0, 0, 2)}
                out = BatchEncoding((k, v.reshape(shapes.get(k, (0, 0)))) for k, v in out.items())
        elif single and not return_overflowing_tokens:  # transformers drops the batch axis of lists only
            out = BatchEncoding((k, v[0] if v and isinstance(v[0], list) else v) for k, v in out.items())
        out.__dict__["_encodings"] = rows
        return out

    def _inputs(self, text: Any, text_pair: Any, words: bool) -> tuple[bool, list[Any], list[Any] | None]:
        """(one input, the texts, the pairs or None), checked; as transformers, an empty ``text_pair`` of one
        text is no pair. With ``words``, one input is a list of str and a batch a list of such lists."""
        if words:
            check_split_into_words(self._base)
            if isinstance(text, str) or not isinstance(text, (list, tuple)):
                raise TypeError(
                    f"is_split_into_words=True takes a list of words (or a list of such lists), got "
                    f"{type(text).__name__}; pass text.split(), or drop is_split_into_words for raw text"
                )
            single = not (text and isinstance(text[0], (list, tuple)))
            texts: list[Any] = [clean_words(t, i) for i, t in enumerate([text] if single else text)]
            pairs: list[Any] | None = None
            if text_pair is not None:
                pair_list = [text_pair] if single else text_pair
                if not isinstance(pair_list, (list, tuple)):
                    raise TypeError(f"text_pair must match text (lists of words), got {type(text_pair).__name__}")
                pairs = [clean_words(t, i, "text_pair") for i, t in enumerate(pair_list)]
        elif text_pair is None and isinstance(text, (list, tuple)) and any(isinstance(t, (list, tuple)) for t in text):
            # transformers' batch of (text, text_pair) tuples, texts alone mixed in
            single, texts, pairs = False, [], []
            for i, item in enumerate(text):
                is_pair = isinstance(item, (list, tuple)) and len(item) == 2
                texts.append(clean_text(item[0] if is_pair else item, i, "text"))
                pairs.append(clean_text(item[1], i, "text_pair") if is_pair else None)
        else:
            single, texts = as_text_list(text, "text")
            texts = clean_texts(texts, "text")
            if single and isinstance(text_pair, str) and not text_pair:
                text_pair = None
            pairs = None if text_pair is None else clean_texts(as_text_list(text_pair, "text_pair")[1], "text_pair")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts and {len(pairs)} text pairs; they must match")
        return single, texts, pairs

    def encode(
        self,
        text: str,
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Token ids of one text (or pair) as a list, as transformers' ``encode``."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one str, got {type(text).__name__}; call the tokenizer for a batch")
        out = self(
            text,
            text_pair=text_pair,
            add_special_tokens=add_special_tokens,
            truncation=truncation,
            max_length=max_length,
            return_tensors=return_tensors,
            **kwargs,
        )
        return out["input_ids"]

    def encode_plus(self, text: Any, text_pair: Any = None, **kwargs: Any) -> BatchEncoding:
        """transformers' older name for calling the tokenizer on one text (or pair)."""
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence[Any], **kwargs: Any) -> BatchEncoding:
        """transformers' older name for calling the tokenizer on a batch: texts, or (text, text_pair) tuples."""
        items = list(batch_text_or_text_pairs)
        if items and all(isinstance(item, tuple) and len(item) == 2 for item in items):
            return self([a for a, _ in items], [b for _, b in items], **kwargs)
        return self(items, **kwargs)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens the tokenizer adds to one text (or to a pair), as in transformers."""
        return self._encoder.specials[bool(pair)]

    def tokenize(self, text: str, text_pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        tok = self._encoder.copy_for(None)
        encoding = (
            tok.encode(text, add_special_tokens=add_special_tokens)
            if text_pair is None
            else tok.encode(text, text_pair, add_special_tokens=add_special_tokens)
        )
        tokens: list[str] = encoding.tokens
        return tokens

    # -- vocabulary and special tokens, as transformers' fast tokenizers ------------------------------------
    @property
    def vocab_size(self) -> int:
        """The base vocabulary, without added tokens (``len(tokenizer)`` counts them), as transformers."""
        size: int = self._base.get_vocab_size(with_added_tokens=False)
        return size

    def __len__(self) -> int:
        size: int = self._base.get_vocab_size(with_added_tokens=True)
        return size

    def get_vocab(self) -> dict[str, int]:
        vocab: dict[str, int] = self._base.get_vocab(with_added_tokens=True)
        return vocab

    vocab = property(get_vocab)

    @property
    def added_tokens_decoder(self) -> dict[int, Any]:
        """Id -> ``tokenizers.AddedToken`` of the special and added tokens, as transformers' fast tokenizers."""
        decoder: dict[int, Any] = self._base.get_added_tokens_decoder()
        return decoder

    def _special(self, name: str) -> str | None:
        token = self.config.get(f"{name}_token")
        if name == "pad" and "pad_token" not in self.config:  # a folder from before the config named it
            token = self._base.id_to_token(self._pad_id)
        return None if token is None else str(token)

    def _special_id(self, name: str) -> int | None:
        token_id = self.config.get(f"{name}_token_id")
        if token_id is None:
            token = self._special(name)
            token_id = None if token is None else self._base.token_to_id(token)
        return None if token_id is None else int(token_id)

    bos_token = property(lambda self: self._special("bos"))
    eos_token = property(lambda self: self._special("eos"))
    unk_token = property(lambda self: self._special("unk"))
    sep_token = property(lambda self: self._special("sep"))
    cls_token = property(lambda self: self._special("cls"))
    mask_token = property(lambda self: self._special("mask"))
    bos_token_id = property(lambda self: self._special_id("bos"))
    eos_token_id = property(lambda self: self._special_id("eos"))
    unk_token_id = property(lambda self: self._special_id("unk"))
    sep_token_id = property(lambda self: self._special_id("sep"))
    cls_token_id = property(lambda self: self._special_id("cls"))
    mask_token_id = property(lambda self: self._special_id("mask"))

    # The pad token can be set, as transformers' decoder idiom does (tokenizer.pad_token = tokenizer.eos_token);
    # it is a token of the vocabulary (the exported tokenizer adds none), and padding then uses it.
    @property
    def pad_token(self) -> str | None:
        return self._special("pad")

    @pad_token.setter
    def pad_token(self, token: str | None) -> None:
        token_id = None if token is None else self._base.token_to_id(token)
        if token is not None and token_id is None:
            raise ValueError(f"pad_token={token!r} is not in the vocabulary; use one of its tokens, e.g. eos_token")
        self._set_pad(token, token_id)

    @property
    def pad_token_id(self) -> int | None:
        return self._special_id("pad")

    @pad_token_id.setter
    def pad_token_id(self, token_id: int | None) -> None:
        token = None if token_id is None else self._base.id_to_token(int(token_id))
        if token_id is not None and token is None:
            raise ValueError(f"pad_token_id={token_id!r} is not in the vocabulary (size {len(self)})")
        self._set_pad(token, token_id)

    def _set_pad(self, token: str | None, token_id: int | None) -> None:
        self.config = {**self.config, "pad_token": token, "pad_token_id": token_id}
        if token_id is not None:
            self._pad_id = int(token_id)

    def add_special_tokens(self, special_tokens_dict: dict[str, Any], **kwargs: Any) -> int:
        """Only ``{"pad_token": <a token of the vocabulary>}`` (the decoder idiom); returns 0 tokens added."""
        if (
            set(special_tokens_dict) == {"pad_token"}
            and self._base.token_to_id(str(special_tokens_dict["pad_token"])) is not None
        ):
            self.pad_token = str(special_tokens_dict["pad_token"])
            return 0
        raise NotImplementedError(_FROZEN.format(what=f"add_special_tokens({special_tokens_dict!r})"))

    def add_tokens(self, *args: Any, **kwargs: Any) -> int:
        raise NotImplementedError(_FROZEN.format(what="add_tokens"))

    def save_pretrained(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "save_pretrained: the tokenizer is part of the exported model folder; copy the folder's tokenizer.json, "
            "tokenizer_config.json and special_tokens_map.json (transformers loads them)"
        )

    def _check_pad(self) -> None:
        if self.pad_token is None:  # as transformers, which would otherwise pad with an id of its choosing
            raise ValueError(
                "Asking to pad but the tokenizer does not have a padding token; set one, e.g. "
                "tokenizer.pad_token = tokenizer.eos_token"
            )

    @property
    def special_tokens_map(self) -> dict[str, str]:
        return {f"{n}_token": t for n in _SPECIALS if (t := self._special(n)) is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys(self.special_tokens_map.values()))

    @property
    def all_special_ids(self) -> list[int]:
        return [i for t in self.all_special_tokens if (i := self._base.token_to_id(t)) is not None]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        """Id of a token, or ids of a list; unknown tokens give ``unk_token_id``, as transformers."""
        if isinstance(tokens, str):
            token_id = self._base.token_to_id(tokens)
            return self.unk_token_id if token_id is None else int(token_id)
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        """Token of an id, or tokens of a list of ids, as transformers."""
        if isinstance(ids, (int, np.integer)):
            token: str | None = self._base.id_to_token(int(ids))
            return token
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._base.id_to_token(int(i)) for i in ids if int(i) not in special]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._base.decoder
        return str(decoder.decode(tokens)) if decoder is not None else " ".join(tokens)

    def decode(
        self, token_ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of token ids. Special tokens are kept unless ``skip_special_tokens=True`` (transformers' default);
        spaces are cleaned up as the checkpoint's tokenizer says (``clean_up_tokenization_spaces``)."""
        if isinstance(token_ids, (int, np.integer)):
            token_ids = [token_ids]
        ids = np.asarray(token_ids).reshape(-1).tolist() if isinstance(token_ids, np.ndarray) else token_ids
        text: str = self._base.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        clean = (
            self.config.get("clean_up_tokenization_spaces", False)
            if clean_up_tokenization_spaces is None
            else clean_up_tokenization_spaces
        )
        return clean_up(text) if clean else text

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        """``decode`` of each row (a list of id lists, or a 2-D array), as transformers."""
        return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in sequences]

    def __repr__(self) -> str:
        return f"AutoTokenizer(max_length={self.model_max_length}, inputs={self.model_input_names})"
