"""The export recipe, start to finish, in one readable function.

refuse an output it must not write (_output.prepare) -> load and check the checkpoint -> PyTorch's reference
outputs -> export fp32 -> fuse -> quantize / fp16 -> write tokenizer and config -> validate every variant
against PyTorch -> write the manifest -> move the finished folder into place with a rename that never
replaces what appeared meanwhile. Everything is built in a hidden sibling folder (_output.staging), so an
interrupted export never leaves a half-written model folder behind. A file error on the way (full disk,
permissions) is one ExportError naming the file and the remedy.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from importlib import metadata
from pathlib import Path

from tqdm.auto import tqdm

from onnxpipe._tasks import GRAPHS
from onnxpipe._manifest import FORMAT_VERSION, Manifest, dump_manifest, sha256_file
from onnxpipe._tokenizer import AutoTokenizer
from onnxpipe.errors import ExportError

from ._ecosystem import max_seq_length, write_ecosystem_files
from ._output import check_space, file_errors, fsync_tree, place, prepare, staging
from ._registry import HEADS, canonical_export_task, folder_tasks

VARIANT_FILES = {"fp32": "onnx/model.onnx", "int8": "onnx/model_quantized.onnx", "fp16": "onnx/model_fp16.onnx"}


def _parse_precisions(precisions) -> list[str]:
    if isinstance(precisions, str):
        precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in VARIANT_FILES]
    if bad or not precisions:
        raise ExportError(f"unknown precision(s) {bad or precisions}; choose from {sorted(VARIANT_FILES)}")
    return list(dict.fromkeys(precisions))


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("onnxpipe", "torch", "transformers", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _max_length(ckpt) -> int:
    tok_max = getattr(ckpt.tokenizer, "model_max_length", None) or 10**9
    pos = getattr(ckpt.config, "max_position_embeddings", None) or 512
    # RoBERTa-style position ids (RoBERTa, XLM-R, MPNet) start after the padding index: fewer are usable.
    pad = getattr(ckpt.config, "pad_token_id", None)
    if ckpt.settings.get("positions_after_pad") and pad is not None:
        pos -= pad + 1
    # A sentence-transformers model was trained and is used at its own max_seq_length (256 for
    # all-MiniLM-L6-v2): truncating later gives other vectors than sentence-transformers for longer texts.
    st_max = max_seq_length(ckpt) or 10**9
    return int(min(tok_max, pos, st_max))


def _pooling(ckpt) -> dict:
    """Pooling as sentence-transformers configures it (modules.json), else mean + L2 normalisation."""
    if ckpt.local is not None and (ckpt.local / "modules.json").is_file():
        modules = json.loads((ckpt.local / "modules.json").read_text())
        pooling = {"mode": "mean", "normalize": False, "source": "sentence-transformers modules.json"}
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                cfg = json.loads((ckpt.local / m["path"] / "config.json").read_text())
                for mode in ("cls", "mean", "max"):
                    if cfg.get(f"pooling_mode_{mode}_token" if mode == "cls" else f"pooling_mode_{mode}_tokens"):
                        pooling["mode"] = mode
            if m.get("type", "").endswith("Normalize"):
                pooling["normalize"] = True
        return pooling
    return {"mode": "mean", "normalize": True, "source": "default"}


def _write_tokenizer(ckpt, folder: Path, max_length: int) -> None:
    backend = ckpt.tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    path = folder / "tokenizer.json"
    try:
        backend.save(str(path))
    except Exception as e:  # the Rust library raises a bare Exception, "... (os error 28)": make it an OSError
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from e


def _provenance(ckpt, revision) -> dict:
    prov = {"source": ckpt.source, "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tools": _versions()}
    if ckpt.local is not None:
        prov["source_kind"] = "local folder"
        weights = sorted(ckpt.local.glob("*.safetensors")) or sorted(ckpt.local.glob("*.bin"))
        prov["weights_sha256"] = {w.name: sha256_file(w) for w in weights}
    else:
        prov["source_kind"] = "hub"
        prov["revision"] = getattr(ckpt.config, "_commit_hash", None) or revision or "main"
    return prov


def run_export(source, task="text-classification", out=None, precisions=("int8", "fp32", "fp16"), force=False,
               allow_pickle=False, trust_remote_code=False, revision=None, progress=True,
               validation_data=None, int8_recipe="default") -> Path:
    requested, task = task, canonical_export_task(task)
    precisions = _parse_precisions(precisions)
    target = prepare(out, source, force)
    out = target.path
    if validation_data is not None:
        if task not in ("text-classification", "feature-extraction"):
            raise ExportError("--validation-data applies to text-classification (labelled sentences, label<TAB>text) "
                              "and feature-extraction (STS Benchmark pairs) exports only")
        if not Path(validation_data).is_file():
            raise ExportError(f"--validation-data {validation_data}: no such file (expected label<TAB>text rows "
                              "for text-classification, STS Benchmark rows for feature-extraction)")
        if task == "feature-extraction":
            from ._stsb import read_sts

            read_sts(validation_data)  # a wrong file is refused now, not after the export
    search = int8_recipe == "search"
    if search and (validation_data is None or "int8" not in precisions):
        raise ExportError("--int8-recipe search scores candidates on labelled data: pass --validation-data TSV "
                          "(text-classification) and keep int8 in --precision")
    from ._optimize import DEFAULT_INT8, recipe_named

    recipe = None if search else recipe_named(DEFAULT_INT8 if int8_recipe == "default" else int8_recipe)

    from ._load import check_head_size, load_checkpoint, tokenizer_config
    from ._onnx import export_fp32
    from ._optimize import fuse, int8_source, int8_variant, quantize_int8, to_fp16
    from ._validate import dataset_figures, pytorch_labels, read_labelled_tsv, torch_reference, validate_variant

    steps = ["load checkpoint", "export fp32 ONNX", "fuse graph", *[f"make {p}" for p in precisions if p != "fp32"],
             "validate against PyTorch", "write manifest"]
    bar = tqdm(total=len(steps), desc=f"export {Path(str(source)).name}", unit="step", disable=not progress)

    def step(name):
        bar.set_postfix_str(name)

    with staging(out) as tmp, file_errors(out):
        check_space(tmp, source)
        step("load checkpoint")
        ckpt = load_checkpoint(str(source), task, allow_pickle, trust_remote_code, revision)
        tasks = folder_tasks(requested, ckpt.config)  # refuses zero-shot for a model without NLI labels
        # PyTorch's outputs before the long work: non-finite ones, or a head of another size than the labels,
        # are refused now rather than after export, fusion and quantization.
        ref = torch_reference(ckpt, task)
        check_head_size(ckpt, task, ref)
        bar.update()

        step("export fp32 ONNX")
        raw = export_fp32(ckpt.model, task, tmp / "raw")
        bar.update()

        step("fuse graph")
        (tmp / "onnx").mkdir()
        fp32 = tmp / VARIANT_FILES["fp32"]
        fused_ops = fuse(raw, fp32, ckpt.settings["fusion"], ckpt.config)
        bar.update()

        variants: dict[str, dict] = {"fp32": {"file": VARIANT_FILES["fp32"], "fused_operators": fused_ops}}
        for p in precisions:
            if p == "int8":
                step("make int8")
                if not search:  # a search quantizes its candidates once the folder can be loaded, below
                    source = int8_source(recipe, raw, fp32, ckpt.settings["fusion"], ckpt.config)
                    quantize_int8(source, tmp / VARIANT_FILES["int8"], recipe)
                    variants["int8"] = {**int8_variant(VARIANT_FILES["int8"], recipe), "recipe": recipe}
                bar.update()
            elif p == "fp16":
                step("make fp16")
                to_fp16(fp32, tmp / VARIANT_FILES["fp16"])
                variants["fp16"] = {"file": VARIANT_FILES["fp16"],
                                    "note": "fp16 weights, fp32 inputs/outputs; meant for CUDA"}
                bar.update()
        max_length = _max_length(ckpt)
        _write_tokenizer(ckpt, tmp, max_length)
        ckpt.config.save_pretrained(tmp)  # with id2label / label2id, which Optimum and transformers.js read
        write_ecosystem_files(ckpt, tmp, max_length)
        cfg = ckpt.config
        data = {
            "format_version": FORMAT_VERSION,
            "task": task,
            "tasks": tasks,
            "architecture": cfg.model_type,
            "inputs": _graph_inputs(fp32),
            "outputs": [*HEADS[task]["outputs"], "last_hidden_state"],
            "tokenizer_config": tokenizer_config(ckpt.tokenizer),
            "hidden_size": int(getattr(cfg, "hidden_size", None) or getattr(cfg, "dim")),
            "max_length": max_length,
            "pad_token_id": int(ckpt.tokenizer.pad_token_id or 0),
            "tokenizer": "tokenizer.json",
            "variants": variants,
            "files": {},
            "provenance": _provenance(ckpt, revision),
        }
        if GRAPHS[task].labels:
            data["labels"] = {str(k): v for k, v in sorted(cfg.id2label.items())}
            if task == "text-classification":
                data["problem_type"] = cfg.problem_type or "single_label_classification"
        else:
            data["pooling"] = _pooling(ckpt)

        step("validate against PyTorch")
        tokenizer = AutoTokenizer((tmp / "tokenizer.json").read_text(encoding="utf-8"), max_length, data["inputs"],
                                  data["pad_token_id"])
        manifest = Manifest(folder=tmp, data=data)
        ref_labels = None  # PyTorch's labels on --validation-data: computed once, for the search and the figures
        if search:
            from ._int8_search import search as search_int8

            texts, gold = read_labelled_tsv(validation_data)
            ref_labels = pytorch_labels(ckpt, texts)
            found = search_int8(tmp, manifest, tokenizer, lambda r: int8_source(r, raw, fp32, ckpt.settings["fusion"],
                                                                                ckpt.config),
                                texts, gold, ref_labels, progress=step)
            chosen = found["candidates"][found["chosen"]]["recipe"] | {"name": found["chosen"]}
            variants["int8"] = {**int8_variant(VARIANT_FILES["int8"], chosen), "recipe": chosen,
                                "recipe_search": found}
        shutil.rmtree(tmp / "raw")
        for p, v in variants.items():  # an unfused int8 graph is fused by onnxruntime at load, not here
            if v.get("recipe", {}).get("graph", "fused") == "fused":
                v.setdefault("fused_operators", fused_ops)
        for p in variants:
            try:
                variants[p]["validation"] = validate_variant(manifest, p, tokenizer, ref)
            except ExportError:
                raise
            except Exception as e:  # e.g. fp16 kernels the CPU provider lacks: recorded, not fatal
                if p == "fp32":
                    raise
                variants[p]["validation"] = {"skipped": f"could not run on CPU: {str(e).splitlines()[0][:200]}"}
        if validation_data is not None and task == "feature-extraction":
            from ._stsb import sts_figures  # Spearman of PyTorch, fp32, int8; fails when int8 drops > 1 point

            data["validation_data"] = sts_figures(ckpt, manifest, tokenizer, validation_data)
        elif validation_data is not None:
            data["validation_data"] = dataset_figures(ckpt, manifest, tokenizer, validation_data, ref_labels)
        bar.update()

        step("write manifest")
        for p in list(variants):
            if p not in precisions:  # fp32 was only the intermediate; its figures stay as provenance
                (tmp / variants[p]["file"]).unlink()
                data.setdefault("intermediate_validation", {})[p] = variants.pop(p)["validation"]
        for path in sorted(tmp.rglob("*")):
            if path.is_file():
                rel = path.relative_to(tmp).as_posix()
                data["files"][rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        (tmp / "manifest.json").write_text(dump_manifest(data), encoding="utf-8")
        fsync_tree(tmp)
        place(tmp, target)
        fsync_tree(out.parent, recursive=False)  # the rename itself
        bar.update()
    bar.close()
    return out


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    names = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]
