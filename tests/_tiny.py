"""Tiny random Hugging Face checkpoints for the tests, built offline from a config (no hub, no network).

Every checkpoint has 2 layers, hidden size 32, 4 heads and 128 positions, random weights from a fixed seed,
safetensors weights and a *fast* tokenizer (tokenizer.json) that ``transformers.AutoTokenizer`` loads. The
tokenizers are real ones for their architecture (WordPiece over BERT's vocabulary, byte-level BPE for
RoBERTa, SentencePiece-style Unigram for XLM-R / ALBERT / DeBERTa-v2), trained here on a small built-in
corpus, because a tokenizer that only maps a toy alphabet would hide the bugs that matter (special tokens,
pair templates, type ids, padding ids).

    >>> build_checkpoint("roberta", "text-classification", Path("/tmp/tiny-roberta"))
    PosixPath('/tmp/tiny-roberta')

Needs torch, transformers and tokenizers (the export extra); import it only from torch-marked code.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

ARCHS = ["bert", "distilbert", "roberta", "xlm-roberta", "albert", "electra", "mpnet", "deberta-v2"]

# head -> transformers auto class the checkpoint is saved with. Another head is one line here (plus, where it
# needs them, extra config keys in _HEAD_CONFIG).
HEADS: dict[str, str] = {
    "text-classification": "AutoModelForSequenceClassification",
    "feature-extraction": "AutoModel",
    "fill-mask": "AutoModelForMaskedLM",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "zero-shot-classification": "AutoModelForSequenceClassification",  # an NLI classifier
    "text-generation": "AutoModelForCausalLM",  # decoder-only archs (DECODER_ARCHS) only
    "text2text-generation": "AutoModelForSeq2SeqLM",  # encoder-decoder archs (SEQ2SEQ_ARCHS) only
}

# Causal LMs: their own configs (the encoder keys of _COMMON do not apply), byte-level BPE tokenizers as GPT-2
# and Llama-3 / SmolLM ship, and 2 key/value heads for Llama so grouped-query attention is exercised.
DECODER_ARCHS = ["gpt2", "llama", "qwen2", "mistral"]
# Encoder-decoders: T5 (relative attention buckets, a task prefix in task_specific_params), BART (byte-level BPE,
# forced eos) and Marian (decoding starts at the pad token, pad banned by bad_words_ids, a final logits bias).
SEQ2SEQ_ARCHS = ["t5", "bart", "marian"]
SEQ2SEQ_HEAD = "text2text-generation"

LABELS = {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}
# BIO tags plus a bare tag (MISC), which transformers' grouping treats as a continuation.
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG", 7: "MISC"}
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
_HEAD_CONFIG: dict[str, dict] = {
    "token-classification": {"id2label": NER_LABELS, "label2id": {v: k for k, v in NER_LABELS.items()}},
    "zero-shot-classification": {"id2label": NLI_LABELS, "label2id": {v: k for k, v in NLI_LABELS.items()}},
    "text-classification": {
        "id2label": LABELS,
        "label2id": {v: k for k, v in LABELS.items()},
        "problem_type": "single_label_classification",
    },
}

SEED = 1234
MAX_POSITIONS = 128
_ROOT = Path(__file__).resolve().parents[1]

# initializer_range 0.3 (not the usual 0.02): with tiny init every sentence gets ~1/3 per label and the same
# argmax, and label agreement between PyTorch and ONNX would be a tautology. 0.3 spreads the predictions.
_COMMON = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": MAX_POSITIONS,
    "hidden_act": "gelu",
    "initializer_range": 0.3,
}

# The layer shape BART and Marian share (Marian is BART-shaped; they differ in ids, init and tokenizer).
BART_SHAPE = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
    "max_position_embeddings": MAX_POSITIONS,
}

# model_type -> config keys on top of _COMMON (names as each config class spells them).
_CONFIGS: dict[str, dict] = {
    "bert": {"type_vocab_size": 2, "pad_token_id": 0},
    "electra": {"type_vocab_size": 2, "pad_token_id": 0, "embedding_size": 16},  # embeddings projected up
    "distilbert": {"n_layers": 2, "dim": 32, "n_heads": 4, "hidden_dim": 37, "pad_token_id": 0},
    "roberta": {"type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
    "xlm-roberta": {"type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2},
    "mpnet": {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "relative_attention_num_buckets": 32},
    "albert": {
        "embedding_size": 16,
        "num_hidden_groups": 1,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "type_vocab_size": 2,
    },
    # DeBERTa-v3 style: relative attention with both disentangled terms, no absolute positions, no type ids.
    "gpt2": {
        "n_layer": 2,
        "n_embd": 32,
        "n_head": 4,
        "n_inner": 37,
        "n_positions": MAX_POSITIONS,
        "initializer_range": 0.3,
        "bos_token_id": 0,
        "eos_token_id": 0,
    },
    "llama": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": 0.3,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
    },
    # Qwen2: biases on q/k/v; Mistral: a sliding window (wider than the 128 positions here). The Llama family
    # has head size 16 (hidden 64, 4 heads): the smallest GroupQueryAttention runs, so the fused graph is tested.
    "qwen2": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 37,
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": 0.3,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": True,
        "use_sliding_window": False,
    },
    "mistral": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "intermediate_size": 37,
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": 0.3,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "sliding_window": 256,
    },
    "t5": {
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 37,
        "num_layers": 2,
        "num_decoder_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "initializer_factor": 1.0,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "max_length": 16,
        "task_specific_params": {
            "summarization": {
                "early_stopping": True,
                "length_penalty": 2.0,
                "max_length": 24,
                "min_length": 4,
                "no_repeat_ngram_size": 3,
                "num_beams": 4,
                "prefix": "summarize: ",
            },
            "translation_en_to_de": {"max_length": 20, "num_beams": 3, "prefix": "translate English to German: "},
        },
    },
    "bart": {
        **BART_SHAPE,
        "init_std": 0.3,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
        "forced_bos_token_id": 0,
        "no_repeat_ngram_size": 3,
        "max_length": 16,
    },
    "marian": {
        **BART_SHAPE,
        "init_std": 0.05,  # at 0.3 every input decodes to one repeated token, and beam search equals greedy
        "pad_token_id": 2,
        "eos_token_id": 1,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 1,
        "bad_words_ids": [[2]],
        "num_beams": 3,
        "max_length": 16,
    },
    "deberta-v2": {
        "type_vocab_size": 0,
        "pad_token_id": 0,
        "relative_attention": True,
        "max_relative_positions": -1,
        "position_buckets": 64,
        "pos_att_type": ["p2c", "c2p"],
        "position_biased_input": False,
        "norm_rel_ebd": "layer_norm",
        "share_att_key": True,
    },
}

# A small corpus for training the BPE / Unigram tokenizers: plain English, punctuation, digits, accents,
# CJK and emoji, so that the test sentences are covered by learned pieces rather than <unk>.
_SUBJECTS = [
    "The film",
    "This movie",
    "The food",
    "My phone",
    "The service",
    "Our hotel",
    "The book",
    "The plot",
    "Das Essen",
    "La película",
    "Le café",
    "東京の店",
]
_VERBS = ["was", "is", "seemed", "felt", "became", "remains", "war", "est", "fue", "だった"]
_ENDS = [
    "great!",
    "terrible.",
    "not bad at all.",
    "a charming, funny and moving portrait.",
    "boring, honestly...",
    "slow 😞",
    "amazing 👍👍",
    "fine; it was OK.",
    "worse than 42 others in 2026.",
    "naïve — résumé, Zürich",
    "ausgezeichnet, aber laut.",
    "très bien — merci !",
    "buenísima y barata.",
    "最高です。",
    "🔋 dies fast",
]


_PROSE = (
    "I've been waiting for a HuggingFace course my whole life. I hate this so much! The quick brown fox jumps "
    "over the lazy dog. What time does the train to Edinburgh leave on Sunday morning? Hello world, hello again. "
    "A gorgeous, witty, seductive movie; a cookie-cutter job, cut-and-paste from start to finish. The actors seem "
    "as bored as the audience by the time the credits roll, which cannot come soon enough for anyone who paid for "
    "a ticket. Nobody apologised, the soup was cold and the waiter forgot our drinks. Not a good product, and I "
    "would not buy it again. A masterpiece of storytelling, surprising, tender and wise. Pair text, question and "
    "answer, context and summary: tokenizers learn pieces such as ing, tion, ment, ness, ly, un, re and pre. "
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14 -7 +42 %; symbols # @ & * ( ) [ ] { } / \\ | ~ ^ _ = < > ' \" `."
).split(". ")


def corpus() -> list[str]:
    """A few hundred deterministic sentences for tokenizer training."""
    return [f"{s} {v} {e}" for s, v, e in itertools.product(_SUBJECTS, _VERBS, _ENDS)][::3] + _PROSE * 3


# -- tokenizers -------------------------------------------------------------------------------------------
def bert_vocab() -> list[str]:
    """BERT's uncased WordPiece vocabulary (30522 tokens), from the shared checkpoint or, in a checkout
    without it, from the committed minilm-sst2 folder's tokenizer.json (the same vocabulary)."""
    shared = _ROOT.parent / "shared" / "checkpoints" / "minilm-sst2" / "vocab.txt"
    if shared.is_file():
        return shared.read_text(encoding="utf-8").splitlines()
    committed = _ROOT / "models" / "minilm-sst2" / "tokenizer.json"
    if committed.is_file():
        vocab = json.loads(committed.read_text(encoding="utf-8"))["model"]["vocab"]
        return sorted(vocab, key=vocab.__getitem__)
    raise FileNotFoundError(f"neither {shared} nor {committed} exists: the tiny BERT-family tokenizers need one")


def _wordpiece(arch: str, out_dir: Path):
    """BERT's real WordPiece vocabulary; MPNet's is the same with RoBERTa-style specials around it."""
    from transformers import BertTokenizerFast, DistilBertTokenizerFast, ElectraTokenizerFast, MPNetTokenizerFast

    vocab = bert_vocab()
    if arch == "mpnet":  # as microsoft/mpnet-base: <s> <pad> </s> <unk> + BERT's vocab + <mask>
        vocab = ["<s>", "<pad>", "</s>", "<unk>", *vocab, "<mask>"]
    path = out_dir / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    cls = {
        "bert": BertTokenizerFast,
        "distilbert": DistilBertTokenizerFast,
        "electra": ElectraTokenizerFast,
        "mpnet": MPNetTokenizerFast,
    }[arch]
    # From vocab_file, transformers builds tokenizer.json with its own converter: exactly what a hub
    # checkpoint of this family ships.
    return cls(vocab_file=str(path), do_lower_case=True)


def _byte_level_bpe():
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as roberta-base
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(corpus(), vocab_size=600, min_frequency=1, special_tokens=specials, show_progress=False)
    tok = bpe._tokenizer
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", 2), cls=("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    return RobertaTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
    )


def _unigram_vocab(specials: list[str], size: int) -> list[tuple[str, float]]:
    """A deterministic Unigram vocabulary: the specials, every character of the corpus, then the most frequent
    word pieces (SentencePiece's "▁" marks a word start), scored by log relative frequency."""
    import math
    from collections import Counter

    counts: Counter[str] = Counter()
    for sentence in corpus():
        for word in sentence.split():
            word = "▁" + word
            for i in range(len(word)):
                for j in range(i + 1, min(len(word), i + 8) + 1):
                    counts[word[i:j]] += 1
    chars = sorted({c for piece in counts for c in piece})
    longer = sorted((p for p in counts if len(p) > 1), key=lambda p: (-counts[p] * len(p), p))
    pieces = chars + longer[: max(0, size - len(specials) - len(chars))]
    total = sum(counts[p] for p in pieces)
    return [(t, 0.0) for t in specials] + [(p, math.log(counts[p] / total)) for p in pieces]


def _unigram(arch: str):
    """A SentencePiece-style Unigram model (Metaspace pre-tokenizer), with each family's specials and templates."""
    from tokenizers import SentencePieceUnigramTokenizer, models, processors
    from transformers import AlbertTokenizerFast, DebertaV2TokenizerFast, XLMRobertaTokenizerFast

    if arch == "xlm-roberta":
        specials, unk = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>"
        cls_tok, sep_tok, pair_sep = "<s>", "</s>", "</s> </s>"
    elif arch == "albert":
        specials, unk = ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], "<unk>"
        cls_tok, sep_tok, pair_sep = "[CLS]", "[SEP]", "[SEP]"
    else:  # deberta-v2
        specials, unk = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]"
        cls_tok, sep_tok, pair_sep = "[CLS]", "[SEP]", "[SEP]"
    # Not SentencePieceUnigramTokenizer.train_from_iterator: its trainer gives another vocabulary on every run
    # (so every int8-vs-fp32 figure of these models moved from run to run); pieces scored here are the same.
    vocab = _unigram_vocab(specials, 700)
    tok = SentencePieceUnigramTokenizer(vocab=vocab)._tokenizer  # Metaspace pre-tokenizer and decoder
    tok.model = models.Unigram(vocab, unk_id=specials.index(unk), byte_fallback=False)
    ids = {t: tok.token_to_id(t) for t in specials}
    # XLM-R gives both segments type 0; ALBERT and DeBERTa mark the second segment with type 1.
    b_type = 0 if arch == "xlm-roberta" else 1
    second = " ".join(f"{t}:{b_type}" for t in ["$B", sep_tok])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls_tok} $A {sep_tok}",
        pair=f"{cls_tok} $A {pair_sep} {second}",
        special_tokens=[(t, ids[t]) for t in {cls_tok, sep_tok}],
    )
    if arch == "xlm-roberta":
        return XLMRobertaTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            sep_token="</s>",
            cls_token="<s>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
        )
    cls = AlbertTokenizerFast if arch == "albert" else DebertaV2TokenizerFast
    return cls(
        tokenizer_object=tok,
        unk_token=unk,
        pad_token=specials[0],
        cls_token=cls_tok,
        sep_token=sep_tok,
        mask_token=specials[4],
        do_lower_case=False,
    )


# A ChatML template (as SmolLM2 and Qwen2 ship): the Llama checkpoint carries it, GPT-2 has none.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _decoder_bpe(arch: str):
    """Byte-level BPE as GPT-2 (one <|endoftext|> token for bos/eos/unk, nothing added around a text) or as
    Llama-3 / SmolLM (<s> prepended by the post-processor, </s> as eos, ChatML tokens and a chat template)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    specials = ["<|endoftext|>"] if arch == "gpt2" else ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(corpus(), vocab_size=600, min_frequency=1, special_tokens=specials, show_progress=False)
    tok = bpe._tokenizer
    if arch == "gpt2":
        return GPT2TokenizerFast(
            tokenizer_object=tok,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            model_input_names=["input_ids", "attention_mask"],
        )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],
    )


def _seq2seq_tokenizer(arch: str):
    """T5 and Marian: a SentencePiece-style Unigram that appends </s> (Marian ships no fast tokenizer class, so
    a plain PreTrainedTokenizerFast with its specials stands in); BART: RoBERTa's byte-level BPE, <s> A </s>."""
    from tokenizers import SentencePieceUnigramTokenizer, models, processors
    from transformers import BartTokenizerFast, PreTrainedTokenizerFast, T5TokenizerFast

    if arch == "bart":
        bpe = _byte_level_bpe()
        return BartTokenizerFast(tokenizer_object=bpe.backend_tokenizer, **bpe.special_tokens_map)
    specials = ["<pad>", "</s>", "<unk>"] if arch == "t5" else ["<unk>", "</s>", "<pad>"]
    vocab = _unigram_vocab(specials, 700)
    tok = SentencePieceUnigramTokenizer(vocab=vocab)._tokenizer
    tok.model = models.Unigram(vocab, unk_id=specials.index("<unk>"), byte_fallback=False)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", specials.index("</s>"))]
    )
    names = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    if arch == "t5":
        return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, **names)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"], **names)


def build_tokenizer(arch: str, out_dir: Path):
    """The fast tokenizer of ``arch`` (a transformers PreTrainedTokenizerFast), with the usable max length set."""
    if arch in ("bert", "distilbert", "electra", "mpnet"):
        tok = _wordpiece(arch, out_dir)
    elif arch == "roberta":
        tok = _byte_level_bpe()
    elif arch in DECODER_ARCHS:
        tok = _decoder_bpe(arch)
    elif arch in SEQ2SEQ_ARCHS:
        tok = _seq2seq_tokenizer(arch)
    else:
        tok = _unigram(arch)
    # RoBERTa-style models number positions after the padding index, so two positions are unusable.
    tok.model_max_length = MAX_POSITIONS - 2 if arch in ("roberta", "xlm-roberta", "mpnet") else MAX_POSITIONS
    return tok


# -- checkpoints ------------------------------------------------------------------------------------------
def build_config(arch: str, head: str, vocab_size: int):
    from transformers import AutoConfig

    if head not in HEADS:
        raise KeyError(f"unknown head {head!r}; known: {sorted(HEADS)}")
    if arch not in _CONFIGS:
        raise KeyError(f"unknown arch {arch!r}; known: {ARCHS}")
    if (arch in DECODER_ARCHS) != (head == "text-generation"):
        raise KeyError(f"{arch} with head {head}: text-generation is for {DECODER_ARCHS} and they only have it")
    if (arch in SEQ2SEQ_ARCHS) != (head == SEQ2SEQ_HEAD):
        raise KeyError(f"{arch} with head {head}: {SEQ2SEQ_HEAD} is for {SEQ2SEQ_ARCHS} and they only have it")
    common = {} if arch in DECODER_ARCHS or arch in SEQ2SEQ_ARCHS else _COMMON
    kw = {**common, **_CONFIGS[arch], **_HEAD_CONFIG.get(head, {}), "vocab_size": vocab_size}
    return AutoConfig.for_model(arch, **kw)


def _center_classifier(model, tokenizer) -> None:
    """Shift the output bias so each label's mean logit over the corpus is zero.

    A random head has a per-label offset larger than the per-sentence variation, so it predicts one label for
    almost everything; centred, the predictions spread over the labels and label agreement means something.
    """
    import torch

    out = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == len(LABELS)][-1]
    with torch.no_grad():
        enc = tokenizer(corpus(), padding=True, truncation=True, return_tensors="pt")
        out.bias -= model(**enc).logits.mean(0)


def build_checkpoint(arch: str, head: str, out_dir: Path) -> Path:
    """Write a tiny random checkpoint of ``arch`` with ``head`` into ``out_dir`` (created); return it."""
    import torch
    import transformers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(arch, out_dir)
    config = build_config(arch, head, vocab_size=len(tokenizer))
    torch.manual_seed(SEED)
    model = getattr(transformers, HEADS[head]).from_config(config)
    model.eval()
    if head == "text-classification":
        _center_classifier(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    if head in ("text-generation", SEQ2SEQ_HEAD):  # as hub checkpoints ship it: generate()'s defaults, stop ids
        model.generation_config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tiny.json").write_text(json.dumps({"arch": arch, "head": head, "seed": SEED}) + "\n")
    return out_dir
