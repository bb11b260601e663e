"""Vocabulary pruning (``--prune-vocab CORPUS``): keep only the tokens a corpus needs, in the word-embedding
matrix (and a masked LM's output layer) and in tokenizer.json, so a model for one language or domain is smaller.

Kept: every id the tokenizer gives the corpus, every special / added token and the ids config.json names, the
single-character pieces of each character the kept pieces are spelled with (its "alphabet"; for byte-level BPE
all 256 byte symbols), and for BPE every token a kept token is merged from. New ids follow the old order.
Trade-off, deliberately: text the corpus covers tokenizes exactly as before (checked over the whole corpus at
export), but a word the corpus never showed splits into more, shorter pieces than the full vocabulary would
give, and becomes the unknown token only when it holds a character outside the alphabet (WordPiece, Unigram).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from onnxpipe._for_export import sha256_file
from onnxpipe.errors import ExportError

# tokenizer.json model types pruning knows how to cut; anything else is refused rather than guessed at.
_MODELS = ("WordPiece", "BPE", "Unigram", "WordLevel")
# The text column of a TSV corpus, first match wins (SST-2's train.tsv says "sentence", its dev.tsv "content").
_TEXT_COLUMNS = ("sentence", "text", "content")
# Tokenizer files transformers saves besides tokenizer.json; they describe the full vocabulary, so they go.
_SLOW_FILES = ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "spm.model")
_CHECK_TEXTS = 32  # corpus texts run through PyTorch before and after, to prove the surgery changed nothing
# What a text outside the corpus becomes, per tokenizer model (the manifest's vocab_pruning.unseen_text).
_UNSEEN = {
    "WordPiece": "a word outside the corpus splits into kept pieces; one holding a character outside 'alphabet' "
    "becomes unk_token",
    "Unigram": "a word outside the corpus splits into kept pieces; a character outside 'alphabet' becomes unk_token",
    "BPE": "a word outside the corpus splits into kept pieces, down to single bytes or characters",
    "WordLevel": "a word outside the corpus becomes unk_token",
}


def read_corpus(path: str | os.PathLike[str]) -> list[str]:
    """The texts of a corpus file: a ``.tsv`` with a header (its sentence / text / content column, else the
    last one), or any other file as one text per line. Empty lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--prune-vocab {path}: no such file (a text file, one text per line, or a TSV)")
    with open(path, encoding="utf-8", newline="", errors="replace") as f:
        if path.suffix.lower() == ".tsv":
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
            header = [h.strip().lower() for h in rows[0]] if rows else []
            col = next((header.index(c) for c in _TEXT_COLUMNS if c in header), len(header) - 1)
            texts = [r[col] for r in rows[1:] if len(r) > col]
        else:
            texts = f.read().splitlines()
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ExportError(f"--prune-vocab {path}: no text in it; give the corpus the model will see")
    return texts


def check_corpus_option(corpus: str | os.PathLike[str], task: str) -> None:
    """Refuse ``--prune-vocab`` for a task it cannot serve, or a corpus that is missing or empty."""
    if task == "text-generation":
        raise ExportError(
            "--prune-vocab applies to encoder tasks; a text-generation model would lose tokens it may emit. "
            "Export it without --prune-vocab"
        )
    read_corpus(corpus)


def prune_checkpoint(ckpt: Any, task: str, corpus: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Cut ``ckpt``'s vocabulary to what ``corpus`` needs; return the checkpoint (model, tokenizer and config
    changed in place) and the manifest's ``vocab_pruning`` record.

    >>> ckpt, record = prune_checkpoint(ckpt, "text-classification", "../shared/data/sst2/train.tsv")  # doctest: +SKIP
    >>> record["vocab_before"], record["vocab_after"]  # doctest: +SKIP
    (30522, 11609)
    """
    if task == "text-generation":
        check_corpus_option(corpus, task)  # refuses, naming the reason
    texts = read_corpus(corpus)
    old_tok = ckpt.tokenizer
    spec = json.loads(old_tok.backend_tokenizer.to_str())
    kind = spec["model"]["type"]
    if kind not in _MODELS:
        raise ExportError(f"--prune-vocab: tokenizer model {kind!r} is not supported; supported: {', '.join(_MODELS)}")
    before = len(old_tok)
    keep, counts, alphabet = _kept_ids(ckpt, spec, texts)
    new_id = {old: new for new, old in enumerate(keep)}
    pruned = _prune_tokenizer_json(spec, new_id)
    new_tok = _reload_tokenizer(old_tok, pruned, new_id)
    _check_corpus(old_tok, new_tok, texts, new_id)
    reference = _outputs(ckpt.model, old_tok, texts[:_CHECK_TEXTS])
    _prune_model(ckpt, keep, new_id, task)
    _check_model(ckpt, new_tok, texts[:_CHECK_TEXTS], reference, keep, task)
    ckpt.tokenizer = new_tok
    unk = new_tok.unk_token
    record = {
        "corpus": str(corpus),
        "corpus_sha256": sha256_file(Path(corpus)),
        "corpus_texts": len(texts),
        "tokenizer_model": kind,
        "vocab_before": before,
        "vocab_after": len(keep),
        "kept": counts,
        "alphabet": alphabet,
        "unk_token": None if unk is None else str(unk),
        "unk_token_id": new_tok.unk_token_id,
        "unseen_text": _UNSEEN[kind],
        "outputs": "the masked-LM head scores only the kept tokens" if task == "fill-mask" else "unchanged",
    }
    return ckpt, record


# -- which ids -----------------------------------------------------------------------------------------------
def _kept_ids(ckpt: Any, spec: dict[str, Any], texts: list[str]) -> tuple[list[int], dict[str, int], str]:
    from tokenizers import Tokenizer

    model = spec["model"]
    backend = Tokenizer.from_str(json.dumps(spec))  # a copy: the checkpoint's tokenizer is not reconfigured
    backend.no_truncation()
    backend.no_padding()
    corpus = {i for enc in backend.encode_batch(texts) for i in enc.ids}
    special = {t["id"] for t in spec.get("added_tokens", [])} | set(ckpt.tokenizer.all_special_ids)
    special |= {v for k, v in ckpt.config.to_dict().items() if k.endswith("_token_id") and isinstance(v, int)}
    special = {i for i in special if 0 <= i < len(ckpt.tokenizer)}
    vocab = _vocab(model)
    token = {i: t for t, i in vocab.items()}
    kept = corpus | special
    prefix = model.get("continuing_subword_prefix") or ""
    suffix = model.get("end_of_word_suffix") or ""
    spelled = (token[i] for i in kept - special if i in token)
    chars = sorted({c for piece in spelled for c in _strip(piece, prefix, suffix)})
    if model["type"] == "BPE" and _byte_level(spec):
        base = {i for t, i in vocab.items() if len(t) == 1}
        chars = sorted(t for t in vocab if len(t) == 1)
    elif model["type"] == "WordLevel":
        base, chars = set(), []
    else:
        forms = [c for ch in chars for c in (ch, prefix + ch, ch + suffix, prefix + ch + suffix)]
        base = {vocab[f] for f in forms if f in vocab}
    if model.get("byte_fallback"):
        base |= {i for t, i in vocab.items() if len(t) == 6 and t.startswith("<0x") and t.endswith(">")}
    parts: set[int] = set()
    if model["type"] == "BPE":
        parts = _merge_closure(model, vocab, kept | base) - kept - base
    if model["type"] in ("WordPiece", "WordLevel", "BPE") and model.get("unk_token") in vocab:
        special.add(vocab[model["unk_token"]])
    if model["type"] == "Unigram" and model.get("unk_id") is not None:
        special.add(model["unk_id"])
    keep = sorted(corpus | special | base | parts)
    counts = {
        "corpus": len(corpus),
        "special": len(special - corpus),
        "alphabet": len(base - corpus - special),
        "merge_parts": len(parts),
    }
    return keep, counts, "".join(chars)


def _vocab(model: dict[str, Any]) -> dict[str, int]:
    if model["type"] == "Unigram":
        return {piece: i for i, (piece, _score) in enumerate(model["vocab"])}
    return dict(model["vocab"])


def _strip(piece: str, prefix: str, suffix: str) -> str:
    if prefix and piece.startswith(prefix) and len(piece) > len(prefix):
        piece = piece[len(prefix) :]
    if suffix and piece.endswith(suffix) and len(piece) > len(suffix):
        piece = piece[: -len(suffix)]
    return piece


def _byte_level(spec: dict[str, Any]) -> bool:
    def has(node: Any) -> bool:
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(has(v) for v in node.values())
        return isinstance(node, list) and any(has(v) for v in node)

    return has(spec.get("pre_tokenizer"))


def _merges(model: dict[str, Any]) -> list[tuple[str, str]]:
    # tokenizers writes a merge as "a b" (older files) or ["a", "b"]
    return [_pair(m.split(" ", 1)) if isinstance(m, str) else _pair(m) for m in model.get("merges", [])]


def _pair(parts: Any) -> tuple[str, str]:
    return str(parts[0]), str(parts[1])


def _merged(a: str, b: str, model: dict[str, Any]) -> str:
    """The token the BPE merge (a, b) makes: with a continuing-subword prefix, b's prefix is dropped."""
    prefix = model.get("continuing_subword_prefix") or ""
    return a + (b[len(prefix) :] if prefix and b.startswith(prefix) else b)


def _merge_closure(model: dict[str, Any], vocab: dict[str, int], kept: set[int]) -> set[int]:
    """``kept`` plus every token a kept token is built from by the merges (each merge that makes it), so the
    merges that build a kept token survive pruning."""
    made_from: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merges(model):
        made_from.setdefault(_merged(a, b, model), []).append((a, b))
    token = {i: t for t, i in vocab.items()}
    out, todo = set(kept), [token[i] for i in kept if i in token]
    while todo:
        for pair in made_from.get(todo.pop(), []):
            for part in pair:
                if part in vocab and vocab[part] not in out:
                    out.add(vocab[part])
                    todo.append(part)
    return out


# -- tokenizer.json --------------------------------------------------------------------------------------------
def _prune_tokenizer_json(spec: dict[str, Any], new_id: dict[int, int]) -> dict[str, Any]:
    """A copy of tokenizer.json's object with only the kept tokens, every id renumbered."""
    spec = json.loads(json.dumps(spec))
    model = spec["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [entry for old, entry in enumerate(model["vocab"]) if old in new_id]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        model["vocab"] = {t: new_id[i] for t, i in model["vocab"].items() if i in new_id}
    if model["type"] == "BPE":
        vocab = model["vocab"]
        keep = [(a, b) for a, b in _merges(model) if a in vocab and b in vocab and _merged(a, b, model) in vocab]
        as_strings = bool(model.get("merges")) and isinstance(model["merges"][0], str)
        model["merges"] = [f"{a} {b}" if as_strings else [a, b] for a, b in keep]
    for token in spec.get("added_tokens", []):
        token["id"] = new_id[token["id"]]
    spec["post_processor"] = _renumber_processor(spec.get("post_processor"), new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    return spec


def _renumber_processor(node: Any, new_id: dict[int, int]) -> Any:
    """Ids in a post-processor: TemplateProcessing's special_tokens ``ids``, Bert/Roberta's ``[token, id]``."""
    if node is None:
        return None
    kind = node.get("type")
    if kind == "Sequence":
        node["processors"] = [_renumber_processor(p, new_id) for p in node["processors"]]
    elif kind == "TemplateProcessing":
        for entry in node["special_tokens"].values():
            entry["ids"] = [new_id[i] for i in entry["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            node[key] = [node[key][0], new_id[node[key][1]]]
    elif kind != "ByteLevel":
        raise ExportError(f"--prune-vocab: post-processor {kind!r} is not supported (its token ids would go stale)")
    return node


def _reload_tokenizer(old_tok: Any, spec: dict[str, Any], new_id: dict[int, int]) -> Any:
    """The checkpoint's tokenizer class (so tokenizer_config.json keeps its settings) over the pruned
    tokenizer.json, with ``added_tokens_decoder`` renumbered and the full-vocabulary files left out."""
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="onnxpipe-prune-"))
    try:
        old_tok.save_pretrained(tmp)
        for name in _SLOW_FILES:
            (tmp / name).unlink(missing_ok=True)
        (tmp / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        cfg_path = tmp / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if "added_tokens_decoder" in cfg:
            cfg["added_tokens_decoder"] = {str(new_id[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()}
        cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
        new_tok = AutoTokenizer.from_pretrained(tmp)  # type: ignore[no-untyped-call]
        new_tok.model_max_length = old_tok.model_max_length
        return new_tok
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_corpus(old_tok: Any, new_tok: Any, texts: list[str], new_id: dict[int, int]) -> None:
    """Every corpus text must tokenize to the same tokens as before (ids renumbered): what pruning promises."""
    old = old_tok(texts, add_special_tokens=True)["input_ids"]
    new = new_tok(texts, add_special_tokens=True)["input_ids"]
    for text, a, b in zip(texts, old, new):
        if [new_id.get(i, -1) for i in a] != b:
            raise ExportError(
                f"--prune-vocab: the pruned tokenizer splits the corpus text {text[:80]!r} differently "
                f"({a[:12]} became {b[:12]}); this tokenizer cannot be pruned safely, export without --prune-vocab"
            )


# -- the model ----------------------------------------------------------------------------------------------------
def _prune_model(ckpt: Any, keep: list[int], new_id: dict[int, int], task: str) -> None:
    import torch

    model, config = ckpt.model, ckpt.config
    rows = torch.tensor(keep, dtype=torch.long)
    old_in = model.get_input_embeddings()
    old_out = model.get_output_embeddings() if task == "fill-mask" else None
    pad = config.pad_token_id if isinstance(config.pad_token_id, int) else None
    new_pad = new_id.get(pad) if pad is not None else None
    with torch.no_grad():
        new_in = torch.nn.Embedding(len(keep), old_in.embedding_dim, padding_idx=new_pad)
        new_in.weight.copy_(old_in.weight[rows])
        model.set_input_embeddings(new_in)
        if old_out is not None:
            if not isinstance(old_out, torch.nn.Linear):
                raise ExportError(f"--prune-vocab: {config.model_type}'s masked-LM head is not a Linear layer")
            new_out = torch.nn.Linear(old_out.in_features, len(keep), bias=old_out.bias is not None)
            if old_out.weight is old_in.weight:  # tied input and output embeddings stay tied
                new_out.weight = new_in.weight
            else:
                new_out.weight.copy_(old_out.weight[rows])
            if old_out.bias is not None:
                new_out.bias.copy_(old_out.bias[rows])
            model.set_output_embeddings(new_out)
    # RoBERTa-style embeddings number positions after the padding id they hold
    embeddings = getattr(model.base_model, "embeddings", None)
    if new_pad is not None and embeddings is not None and isinstance(getattr(embeddings, "padding_idx", None), int):
        embeddings.padding_idx = new_pad
    # the checkpoint's config (written to config.json) and the model's own (optimum's dummy inputs read it)
    for cfg in {id(config): config, id(model.config): model.config}.values():
        ids = {k: v for k, v in cfg.to_dict().items() if k.endswith("_token_id") and isinstance(v, int)}
        for key, value in ids.items():
            if value in new_id:
                setattr(cfg, key, new_id[value])
        cfg.vocab_size = len(keep)


def _outputs(model: Any, tok: Any, texts: list[str]) -> list[Any]:
    import torch

    out = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding, so the comparison is exact
            enc = tok([text], truncation=True, return_tensors="pt")
            result = model(**enc)
            out.append(result.logits if getattr(result, "logits", None) is not None else result[0])
    return out


def _check_model(ckpt: Any, tok: Any, texts: list[str], reference: list[Any], keep: list[int], task: str) -> None:
    """The pruned model must give the same outputs on corpus text (a masked LM: on the kept tokens' logits)."""
    import torch

    for text, want, got in zip(texts, reference, _outputs(ckpt.model, tok, texts)):
        if task == "fill-mask":
            want = want[..., keep]
        if want.shape != got.shape or not torch.allclose(want, got, atol=1e-5, rtol=1e-4):
            raise ExportError(
                f"--prune-vocab: {ckpt.config.model_type} ({task}) gives other outputs after pruning on "
                f"{text[:60]!r}; pruning does not support this model, export without --prune-vocab"
            )
