"""Vocabulary pruning (``onnxpipe export --prune-vocab CORPUS``) on tiny checkpoints of the three tokenizer
models that ship with encoders: WordPiece (BERT's real 30,522-token vocabulary), byte-level BPE (RoBERTa) and
Unigram (XLM-R).

What pruning promises: text the corpus covers gives the same outputs as the unpruned folder; any text
tokenizes to ids the pruned model has, and a word holding a character outside the manifest's ``alphabet``
becomes the ``unk_token_id`` the manifest names; the folder still opens in onnxruntime and transformers.js.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _tiny import ARCHS as ARCHITECTURES, corpus
from onnxpipe import AutoModelForMaskedLM, AutoTokenizer, pipeline
from onnxpipe.errors import ExportError

sys.path.insert(0, str(Path(__file__).parent / "interop"))
import envs  # noqa: E402

pytestmark = pytest.mark.torch

# One tokenizer model each: WordPiece, byte-level BPE, Unigram.
ARCHS = ["bert", "roberta", "xlm-roberta"]
CORPUS = corpus()[:60]  # English, French, German, Spanish, Japanese, emoji: a few hundred tokens kept


def _spliced(a: str, b: str) -> str:
    """The first half of ``a``'s words, then the second half of ``b``'s: every word in the form the corpus
    has it (byte-level BPE and SentencePiece tell a text's first word from a later one by its leading space)."""
    wa, wb = a.split(" "), b.split(" ")
    return " ".join(wa[: len(wa) // 2] + wb[len(wb) // 2 :])


# Covered by the corpus: its own texts, and new texts spliced from them.
COVERED = CORPUS[:8] + [_spliced(a, b) for a, b in zip(CORPUS[8:14], CORPUS[20:26])]
# Not covered: words the corpus never has (but the full vocabularies do), and characters it never has.
UNSEEN = ["Quantum xylophones zigzag", "Жук и ёж", "Ωmega ψ", "zebra 🦓 marathon"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prune-corpus") / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pruned(tiny_checkpoint, tmp_path_factory, corpus_file):
    """Factory: ``pruned(arch, head)`` -> the tiny checkpoint exported fp32 with --prune-vocab (built once)."""
    from onnxpipe_export import export

    cache: dict[tuple[str, str], Path] = {}

    def make(arch: str, head: str = "text-classification") -> Path:
        if (arch, head) not in cache:
            out = tmp_path_factory.mktemp(f"pruned-{arch}-{head}") / "model"
            cache[arch, head] = export(
                tiny_checkpoint(arch, head),
                task=head,
                out=out,
                precisions="fp32",
                progress=False,
                prune_vocab=corpus_file,
            )
        return cache[arch, head]

    return make


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("arch", ARCHS)
def test_pruned_folder_gives_the_unpruned_outputs_on_covered_text(arch, tiny_export, pruned):
    full, small = tiny_export(arch, precisions="fp32"), pruned(arch)
    record = _manifest(small)["vocab_pruning"]
    assert record["vocab_after"] < record["vocab_before"]
    for task, compare in [("text-classification", "scores"), ("feature-extraction", "hidden")]:
        a = pipeline(task, model=full, precision="fp32")
        b = pipeline(task, model=small, precision="fp32")
        if compare == "scores":
            got = [[r["score"] for r in out] for out in b(COVERED, top_k=None)]
            want = [[r["score"] for r in out] for out in a(COVERED, top_k=None)]
            np.testing.assert_allclose(got, want, atol=1e-5)
        else:
            for text in COVERED:
                np.testing.assert_allclose(np.asarray(b(text)), np.asarray(a(text)), atol=1e-4)
    # the same tokens, renumbered: the pruned id of each token is its rank among the kept old ids
    full_tok, small_tok = AutoTokenizer.from_pretrained(full), AutoTokenizer.from_pretrained(small)
    for text in COVERED:
        old = full_tok.convert_ids_to_tokens(full_tok(text)["input_ids"])
        new = small_tok.convert_ids_to_tokens(small_tok(text)["input_ids"])
        assert new == old


@pytest.mark.parametrize("arch", ARCHS)
def test_pruned_folder_is_smaller_and_consistent(arch, tiny_export, pruned):
    import onnx

    full, small = tiny_export(arch, precisions="fp32"), pruned(arch)
    m = _manifest(small)
    record = m["vocab_pruning"]
    tokenizer = json.loads((small / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tokenizer["model"]["vocab"]
    assert len(vocab) == record["vocab_after"] == json.loads((small / "config.json").read_text())["vocab_size"]
    graph = onnx.load(str(small / "onnx" / "model.onnx")).graph
    rows = {tuple(t.dims)[0] for t in graph.initializer if len(t.dims) == 2 and "word_embeddings" in t.name}
    assert rows == {record["vocab_after"]}, "the embedding matrix has one row per kept token"
    for name in ("onnx/model.onnx", "tokenizer.json"):
        assert m["files"][name]["size"] < _manifest(full)["files"][name]["size"]
    assert record["corpus_texts"] == len(CORPUS) and len(record["corpus_sha256"]) == 64
    # every id the post-processor and the added tokens name is in the pruned vocabulary
    ids = {t["id"] for t in tokenizer["added_tokens"]}
    assert ids and max(ids) < record["vocab_after"]
    assert m["tokenizer_config"]["unk_token_id"] == record["unk_token_id"]
    assert m["pad_token_id"] == m["tokenizer_config"].get("pad_token_id", m["pad_token_id"]) < record["vocab_after"]


@pytest.mark.parametrize("arch", ARCHS)
def test_unseen_text_becomes_ids_the_pruned_model_knows(arch, pruned):
    small = pruned(arch)
    record = _manifest(small)["vocab_pruning"]
    tok = AutoTokenizer.from_pretrained(small)
    # whatever the text, every id is a row of the pruned embedding matrix, and the model runs on it
    for text in UNSEEN + ["", "🦄" * 5, "x" * 300]:
        ids = tok(text)["input_ids"]
        assert all(0 <= i < record["vocab_after"] for i in ids), text
    clf = pipeline("text-classification", model=small, precision="fp32")
    assert len(clf(UNSEEN)) == len(UNSEEN)


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
def test_unseen_characters_become_the_unk_the_manifest_names(arch, tiny_export, pruned):
    """WordPiece and Unigram: a word with a character outside ``alphabet`` is unk_token; a word spelled only
    with the alphabet never is, whether the corpus had it or not."""
    small = pruned(arch)
    record = _manifest(small)["vocab_pruning"]
    tok = AutoTokenizer.from_pretrained(small)
    unk = record["unk_token_id"]
    assert tok.convert_tokens_to_ids(record["unk_token"]) == unk == tok.unk_token_id
    alphabet = record["alphabet"]
    outside = next(c for c in "жψΩ☃" if c not in alphabet)
    full_tok = AutoTokenizer.from_pretrained(tiny_export(arch, precisions="fp32"))
    for word in (f"{outside}ab", f"zz{outside}"):
        assert unk in tok(word, add_special_tokens=False)["input_ids"], word
    if arch == "bert":  # BERT's full vocabulary spells those words: pruning is what makes them unknown
        assert full_tok.unk_token_id not in full_tok(f"{outside}ab", add_special_tokens=False)["input_ids"]
    letters = [c for c in alphabet if c.isalpha() and c.islower()]
    rng = random.Random(0)
    for _ in range(200):
        word = "".join(rng.choice(letters) for _ in range(rng.randint(1, 12)))
        assert unk not in tok(word, add_special_tokens=False)["input_ids"], word


def test_byte_level_bpe_never_needs_unk(pruned):
    small = pruned("roberta")
    record = _manifest(small)["vocab_pruning"]
    assert record["kept"]["merge_parts"] > 0  # tokens a kept token is merged from
    assert len(record["alphabet"]) == 256
    tok = AutoTokenizer.from_pretrained(small)
    for text in UNSEEN:
        assert record["unk_token_id"] not in tok(text, add_special_tokens=False)["input_ids"], text


def test_fill_mask_scores_only_kept_tokens_with_unpruned_logits(tiny_export, pruned):
    full, small = tiny_export("bert", "fill-mask", precisions="fp32"), pruned("bert", "fill-mask")
    assert _manifest(small)["vocab_pruning"]["outputs"].startswith("the masked-LM head scores only")
    old_vocab = json.loads((full / "tokenizer.json").read_text())["model"]["vocab"]
    new_vocab = json.loads((small / "tokenizer.json").read_text())["model"]["vocab"]
    kept = [old_vocab[t] for t in sorted(new_vocab, key=new_vocab.__getitem__)]
    text = CORPUS[3].replace(CORPUS[3].split()[1], "[MASK]", 1)
    a_tok, b_tok = AutoTokenizer.from_pretrained(full), AutoTokenizer.from_pretrained(small)
    a = AutoModelForMaskedLM.from_pretrained(full, precision="fp32")(**a_tok(text, return_tensors="np")).logits
    b = AutoModelForMaskedLM.from_pretrained(small, precision="fp32")(**b_tok(text, return_tensors="np")).logits
    assert b.shape[-1] == len(kept)
    np.testing.assert_allclose(b, a[..., kept], atol=1e-4)
    top = pipeline("fill-mask", model=small, precision="fp32")(text, top_k=3)
    assert all(r["token_str"].strip() and r["token"] < len(kept) for r in top)


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "bert"])
def test_every_architecture_prunes_with_its_masked_lm_head(arch, pruned):
    """Each family's embeddings and (tied or not) output layer: the export itself proves PyTorch unchanged on the
    corpus after the cut, and the ONNX file then matches the pruned PyTorch model."""
    small = pruned(arch, "fill-mask")
    m = _manifest(small)
    assert m["vocab_pruning"]["vocab_after"] < m["vocab_pruning"]["vocab_before"]
    assert m["variants"]["fp32"]["validation"]["max_abs_diff_logits"] < 1e-4
    mask = m["tokenizer_config"]["mask_token"]
    top = pipeline("fill-mask", model=small, precision="fp32")(f"The film was {mask}", top_k=2)
    assert len(top) == 2 and all(r["token"] < m["vocab_pruning"]["vocab_after"] for r in top)


def test_pruned_folder_reads_the_same_in_transformers_js(pruned, tmp_path):
    """transformers.js tokenizes the pruned tokenizer.json (renumbered specials, [UNK] for unseen characters)
    as onnxpipe does: same scores on covered and unseen text."""
    small = pruned("bert")
    texts = COVERED[:4] + UNSEEN
    where = envs.ensure("transformers.js")
    job = {"id": "pruned", "folder": str(small), "kind": "classify", "precision": "fp32", "texts": texts}
    (tmp_path / "in.json").write_text(json.dumps({"jobs": [{**job, "batch_size": 1, "dim": 3}]}))
    # an ES module resolves its imports from its own folder: the script runs beside node_modules
    shutil.copy(Path(__file__).parent / "interop" / "run_transformersjs.mjs", where / "run.mjs")
    subprocess.run(
        ["node", "run.mjs", str(tmp_path / "in.json"), str(tmp_path / "out.json")], cwd=where, check=True, timeout=300
    )
    result = json.loads((tmp_path / "out.json").read_text())["results"]["pruned"]
    assert "error" not in result, result.get("error")
    want = pipeline("text-classification", model=small, precision="fp32")(texts, top_k=None)
    for got, ours in zip(result["scores"], want):
        assert got == pytest.approx({r["label"]: r["score"] for r in ours}, abs=1e-4)


@pytest.mark.parametrize(
    "content, task, message",
    [
        (None, "text-classification", "no such file"),
        ("\n  \n", "text-classification", "no text in it"),
        ("hello\n", "text-generation", "encoder tasks"),
    ],
)
def test_prune_vocab_refusals(tmp_path, content, task, message):
    from onnxpipe_export import export

    corpus_path = tmp_path / "corpus.txt"
    if content is not None:
        corpus_path.write_text(content, encoding="utf-8")
    with pytest.raises(ExportError, match=message):
        export("unused-source", task=task, out=tmp_path / "out", prune_vocab=corpus_path, progress=False)
    assert not (tmp_path / "out").exists()


def test_corpus_formats(tmp_path):
    from onnxpipe_export._prune import read_corpus

    tsv = tmp_path / "train.tsv"
    tsv.write_text('label\tsentence\n0\tit\'s "fine"\n1\tgreat\n', encoding="utf-8")
    assert read_corpus(tsv) == ['it\'s "fine"', "great"]
    other = tmp_path / "dev.tsv"
    other.write_text("id\tcontent\tlabel\n1\tone text\t0\n", encoding="utf-8")
    assert read_corpus(other) == ["one text"]
    txt = tmp_path / "c.txt"
    txt.write_text("a line\tw ith tab\n\nsecond\n", encoding="utf-8")
    assert read_corpus(txt) == ["a line\tw ith tab", "second"]


def test_cli_export_option_and_info(pruned, capsys, tmp_path):
    from onnxpipe._cli import main

    assert main(["info", str(pruned("bert"))]) == 0
    record = _manifest(pruned("bert"))["vocab_pruning"]
    assert f"vocabulary:    pruned 30522 -> {record['vocab_after']} tokens on corpus.txt" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["export", "any", "--out", str(out), "--prune-vocab", str(tmp_path / "missing.txt")]) == 2
    assert "--prune-vocab" in capsys.readouterr().err and not out.exists()


def test_manifest_reads_vocab_pruning_as_a_typed_key(pruned):
    from onnxpipe._manifest import Manifest, load_manifest
    from onnxpipe.errors import ManifestError

    manifest = load_manifest(pruned("bert"))
    assert manifest.vocab_pruning is not None and "vocab_pruning" not in manifest.extra
    assert manifest.vocab_pruning["vocab_after"] < manifest.vocab_pruning["vocab_before"] == 30522
    assert Manifest.from_json(manifest.to_json(), manifest.folder) == manifest
    data = json.loads(manifest.to_json())
    data["vocab_pruning"] = "30522 -> 83"
    with pytest.raises(ManifestError, match="'vocab_pruning' must be an object"):
        Manifest.from_json(data, manifest.folder)


def _trained(kind: str):
    """A small WordLevel or character BPE (continuing-subword prefix "##", unknown token) tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]"]
    if kind == "WordLevel":
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(special_tokens=specials)
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, continuing_subword_prefix="##")
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.mark.parametrize("kind", ["WordLevel", "BPE"])
def test_tokenizer_models_without_a_tiny_checkpoint(kind):
    """WordLevel, and BPE with a continuing-subword prefix (merges build "a" + "##b" -> "ab"): the corpus
    tokenizes to the same tokens, anything else to ids inside the pruned vocabulary."""
    from types import SimpleNamespace

    from tokenizers import Tokenizer

    from onnxpipe_export._prune import _kept_ids, _prune_tokenizer_json

    hf = _trained(kind)
    spec = json.loads(hf.backend_tokenizer.to_str())
    ckpt = SimpleNamespace(tokenizer=hf, config=SimpleNamespace(to_dict=lambda: {"pad_token_id": 0}))
    keep, counts, _alphabet = _kept_ids(ckpt, spec, CORPUS[:10])
    new_id = {old: new for new, old in enumerate(keep)}
    small = Tokenizer.from_str(json.dumps(_prune_tokenizer_json(spec, new_id)))
    assert small.get_vocab_size() == len(keep) < hf.backend_tokenizer.get_vocab_size()
    for text in CORPUS[:10]:
        old = hf.backend_tokenizer.encode(text)
        assert small.encode(text).tokens == old.tokens
        assert small.encode(text).ids == [new_id[i] for i in old.ids]
    for text in UNSEEN:
        assert all(0 <= i < len(keep) for i in small.encode(text).ids)
    assert counts["merge_parts"] > 0 if kind == "BPE" else counts["alphabet"] == 0
