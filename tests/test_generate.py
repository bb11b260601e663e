"""text-generation against transformers on tiny random GPT-2 and Llama checkpoints (the oracle): greedy token
identity with ``model.generate``, the pipeline's output format, seeded sampling, left-padded batches, stop
strings, streaming, chat templates, the export's manifest and low-bit packing."""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnxpipe
from onnxpipe import errors
from onnxpipe._generate import KVCache, generate_tokens
from onnxpipe._sampling import Sampling

pytestmark = pytest.mark.torch

PROMPTS = ["The food was great!", "Hello", "naïve café résumé — Zürich, 東京の店", "What time does the train leave?"]
ARCHS = ["gpt2", "llama"]


@pytest.fixture(scope="module")
def folders(tiny_export):
    return {a: tiny_export(a, "text-generation", precisions="fp32") for a in ARCHS}


@pytest.fixture(scope="module")
def hf(tiny_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for a in ARCHS:
        path = tiny_checkpoint(a, "text-generation")
        out[a] = (AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), path)
    return out


@pytest.fixture(scope="module")
def pipes(folders):
    return {a: onnxpipe.pipeline("text-generation", model=folders[a]) for a in ARCHS}


def _hf_generate(hf_pair, prompt, **kw):
    import torch

    model, tok = hf_pair[0], hf_pair[1]
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, pad_token_id=model.generation_config.eos_token_id, **kw)
    return out[0, enc["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_are_identical_to_transformers_generate(arch, folders, hf, pipes):
    p = pipes[arch]
    for prompt in PROMPTS:
        want = _hf_generate(hf[arch], prompt, max_new_tokens=32)
        ids = np.array([hf[arch][1](prompt)["input_ids"]])
        got = [
            int(t[0])
            for t, done in generate_tokens(
                p.model, p.graph, ids, np.ones_like(ids), 32, Sampling(), p.info.eos_token_id, p.info.pad_token_id
            )
        ]
        assert got == want, prompt


@pytest.mark.parametrize("arch", ARCHS)
def test_pipeline_output_is_transformers_pipeline_output(arch, hf, pipes):
    from transformers import pipeline as hf_pipeline

    theirs = hf_pipeline("text-generation", model=str(hf[arch][2]))
    for full in (True, False):
        kw = {"max_new_tokens": 16, "do_sample": False, "return_full_text": full}
        assert pipes[arch](PROMPTS, **kw) == theirs(PROMPTS, **kw)
        assert pipes[arch](PROMPTS[0], **kw) == theirs(PROMPTS[0], **kw)


def test_chat_messages_are_rendered_with_the_folder_template(hf, pipes):
    from transformers import pipeline as hf_pipeline

    chat = [{"role": "user", "content": "What time does the train leave?"}]
    theirs = hf_pipeline("text-generation", model=str(hf["llama"][2]))
    kw = {"max_new_tokens": 12, "do_sample": False}
    ours = pipes["llama"](chat, **kw)
    assert ours == theirs(chat, **kw)
    assert ours[0]["generated_text"][-1]["role"] == "assistant"
    with pytest.raises(errors.ChatTemplateError, match="no chat template"):
        pipes["gpt2"](chat, **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_equals_one_by_one(arch, pipes):
    p = pipes[arch]
    kw = {"max_new_tokens": 24, "do_sample": False, "return_full_text": False}
    batched = p(PROMPTS, **kw)
    assert batched == [p(x, **kw) for x in PROMPTS]
    sampled = {"max_new_tokens": 24, "seed": 7, "top_k": 0, "return_full_text": False}
    assert len({r[0]["generated_text"] for r in p(PROMPTS, **sampled)}) > 1  # rows are not copies of one


@pytest.mark.parametrize("arch", ARCHS)
def test_sampling_is_reproducible_with_a_seed(arch, pipes):
    p = pipes[arch]
    kw = {"max_new_tokens": 20, "do_sample": True, "temperature": 1.0, "top_k": 0, "return_full_text": False}
    a = p(PROMPTS[0], seed=1, num_return_sequences=3, **kw)
    assert a == p(PROMPTS[0], seed=1, num_return_sequences=3, **kw)
    assert a != p(PROMPTS[0], seed=2, num_return_sequences=3, **kw)
    assert len({r["generated_text"] for r in a}) > 1  # the three sequences differ
    greedy = p(PROMPTS[0], max_new_tokens=20, do_sample=False, return_full_text=False)
    assert p(PROMPTS[0], seed=5, max_new_tokens=20, top_k=1, return_full_text=False) == greedy
    assert p(PROMPTS[0], seed=5, max_new_tokens=20, top_p=1e-6, return_full_text=False) == greedy


def test_repetition_penalty_matches_transformers(hf, pipes):
    p = pipes["gpt2"]
    for prompt in PROMPTS[:2]:
        want = _hf_generate(hf["gpt2"], prompt, max_new_tokens=24, repetition_penalty=1.5)
        ids = np.array([hf["gpt2"][1](prompt)["input_ids"]])
        got = [
            int(t[0])
            for t, _ in generate_tokens(
                p.model, p.graph, ids, np.ones_like(ids), 24, Sampling(repetition_penalty=1.5), [0], 0
            )
        ]
        assert got == want


@pytest.mark.parametrize("arch", ARCHS)
def test_stop_strings_stop_where_transformers_stops(arch, hf, pipes):
    p = pipes[arch]
    prompt = PROMPTS[0]
    full = p(prompt, max_new_tokens=32, do_sample=False, return_full_text=False)[0]["generated_text"]
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    ours = p(prompt, max_new_tokens=32, do_sample=False, return_full_text=False, stop_strings=stop)[0]["generated_text"]
    assert stop in ours and len(ours) < len(full) and full.startswith(ours)
    tok = hf[arch][1]
    theirs = tok.decode(
        _hf_generate(hf[arch], prompt, max_new_tokens=32, stop_strings=[stop], tokenizer=tok), skip_special_tokens=True
    )
    assert ours == theirs


@pytest.mark.parametrize("arch", ARCHS)
def test_streamed_pieces_join_to_the_full_text(arch, pipes):
    p = pipes[arch]
    for prompt in PROMPTS:
        for kw in ({"do_sample": False}, {"seed": 3}):
            pieces = list(p.stream(prompt, max_new_tokens=40, **kw))
            full = p(prompt, max_new_tokens=40, return_full_text=False, **kw)[0]["generated_text"]
            assert "".join(pieces) == full
            assert len(pieces) > 1


def test_stream_holds_back_half_characters():
    from onnxpipe._stream import TextStream

    data = "é東".encode()  # 2 + 3 bytes, one byte per "token"
    stream = TextStream(lambda ids: bytes(ids).decode("utf-8", "replace"))
    pieces = [stream.add(b) for b in data]
    assert pieces == ["", "é", "", "", "東"]
    assert stream.finish() == ""


def test_cache_stays_in_onnxruntime_between_steps(pipes):
    import onnxruntime as ort

    # optimum's graph (GPT-2): each step's present tensors, one position longer, become the next past
    p = pipes["gpt2"]
    cache = KVCache(p.model, p.graph, 1)
    cache.prefill(np.array([[1, 40, 41]]), np.ones((1, 3), dtype=np.int64))
    first = cache.past
    cache.step(np.array([42]))
    assert all(isinstance(v, ort.OrtValue) for v in cache.past) and cache.past[0] is not first[0]
    assert cache.past[0].shape()[2] == 4
    # the fused graph (Llama): one buffer per tensor, allocated once and written in place
    p = pipes["llama"]
    assert p.graph.shared_buffer
    cache = KVCache(p.model, p.graph, 1, capacity=10)
    cache.prefill(np.array([[1, 40, 41]]), np.ones((1, 3), dtype=np.int64))
    first = list(cache.past)
    assert not cache._buffers[0][0, :, 3].any()
    cache.step(np.array([42]))
    assert all(a is b for a, b in zip(cache.past, first))
    assert cache.past[0].shape() == [1, 2, 10, 16]  # grouped-query attention: 2 key/value heads of size 16
    assert cache._buffers[0][0, :, 3].any() and not cache._buffers[0][0, :, 4].any()  # slot 3: the new token
    with pytest.raises(errors.InputTooLongError, match="capacity"):
        for t in range(7):
            cache.step(np.array([43 + t]))


def test_shared_buffer_gives_what_concatenation_gives(pipes):
    """The same fused graph run both ways over a left-padded batch: in place and concatenated agree."""
    from dataclasses import replace

    p = pipes["llama"]
    ids = np.array([[0, 0, 1, 40, 41], [1, 50, 51, 52, 53]])
    mask = (np.arange(5) >= np.array([[2], [0]])).astype(np.int64)
    runs = []
    for graph in (p.graph, replace(p.graph, shared_buffer=False)):
        cache = KVCache(p.model, graph, 2, capacity=5 + 4)
        logits = [cache.prefill(ids, mask)]
        for t in range(3):
            logits.append(cache.step(np.array([60 + t, 70 + t])))
        runs.append(np.stack(logits))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)


def test_serve_loads_a_decoder_folder_and_leaves_its_cache_inputs_alone(folders):
    serve = pytest.importorskip("onnxpipe._serve")
    for arch in ARCHS:  # warm_up runs encoders once; a decoder's feeds need a cache it does not build
        served = serve.load_model(arch, str(folders[arch]))
        assert list(served.pipelines) == ["text-generation"]
        assert served.model._lane_session is None


def test_bad_arguments_name_the_value_and_the_fix(pipes):
    p = pipes["gpt2"]
    with pytest.raises(ValueError, match="temperature=0"):
        p("Hi", temperature=0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        p("Hi", top_p=1.5)
    with pytest.raises(ValueError, match="num_return_sequences=2 with greedy"):
        p("Hi", do_sample=False, num_return_sequences=2)
    with pytest.raises(TypeError, match="max_tokens"):
        p("Hi", max_tokens=3)
    with pytest.raises(errors.InputTooLongError, match="max_new_tokens=500"):
        p("Hi", max_new_tokens=500)
    with pytest.raises(TypeError, match="inputs is int"):
        p(3)


# Arguments transformers' pipeline refuses with a ValueError: refused here too, before any work, with onnxpipe's
# typed error (also a ValueError) naming the argument and its range; never an empty or garbage result.
REFUSED_BY_BOTH = [
    ({"max_new_tokens": 0}, r"max_new_tokens=0 .*use an int >= 1"),
    ({"max_new_tokens": -1}, r"max_new_tokens=-1 .*use an int >= 1"),
    ({"do_sample": True, "temperature": 0.0}, r"temperature=0\.0 is invalid; use a finite number >= 1e-06"),
    ({"repetition_penalty": 0.0}, r"repetition_penalty=0\.0 is invalid; use a number from 0\.0001 to 10000"),
    ({"repetition_penalty": -1.0}, r"repetition_penalty=-1\.0 is invalid; use a number from"),
]


@pytest.mark.parametrize("kwargs,message", REFUSED_BY_BOTH)
def test_arguments_transformers_refuses_are_refused(kwargs, message, hf, pipes):
    from transformers import pipeline as hf_pipeline

    theirs = hf_pipeline("text-generation", model=str(hf["gpt2"][2]))
    kwargs = {"max_new_tokens": 4, **kwargs}
    for inputs in ("hello", ["hello", "hi"]):
        with pytest.raises(ValueError):
            theirs(inputs, **kwargs)
        with pytest.raises(errors.GenerationArgumentError, match=message) as info:
            pipes["gpt2"](inputs, **kwargs)
        assert isinstance(info.value, ValueError)
    with pytest.raises(errors.GenerationArgumentError, match=message):
        list(pipes["gpt2"].stream("hello", **kwargs))


# Values transformers takes and turns into inf/NaN logits (numpy warned of overflow and nothing was generated):
# refused here with the range that keeps every logit finite, and no numpy warning on the way.
@pytest.mark.parametrize(
    "name,value",
    [
        ("repetition_penalty", 1e-300),
        ("repetition_penalty", 1e300),
        ("repetition_penalty", float("inf")),
        ("repetition_penalty", float("nan")),
        ("temperature", 1e-300),
        ("temperature", float("inf")),
        ("temperature", float("nan")),
        ("top_p", float("nan")),
        ("top_p", 1.5),
        ("top_k", 2.5),
        ("num_return_sequences", 0),
    ],
)
def test_out_of_range_sampling_is_refused_without_numpy_warnings(name, value, pipes):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(errors.GenerationArgumentError, match=rf"{name}=.*(use|valid)"):
            pipes["gpt2"]("hello", max_new_tokens=4, do_sample=True, seed=0, **{name: value})


def test_manifest_records_what_generation_needs(folders):
    gpt2 = json.loads((folders["gpt2"] / "manifest.json").read_text())
    llama = json.loads((folders["llama"] / "manifest.json").read_text())
    assert gpt2["generation"]["eos_token_id"] == [0] and gpt2["generation"]["chat_template"] is None
    assert llama["generation"]["num_key_value_heads"] == 2 and llama["generation"]["eos_token_id"] == [2]
    assert (folders["llama"] / llama["generation"]["chat_template"]).is_file()
    assert (folders["gpt2"] / "generation_config.json").is_file()
    v = llama["variants"]["fp32"]["validation"]
    assert v["greedy_identical"] and v["max_abs_logits_diff"] <= 1e-4
    assert gpt2["tasks"] == ["text-generation"]  # no feature-extraction: a decoder graph has no hidden state out
    # the Llama family gets the fused graph (GroupQueryAttention); GPT-2 keeps optimum's, and says why
    assert llama["generation"]["graph"]["builder"] == "onnxpipe-fused"
    assert gpt2["generation"]["graph"]["builder"] == "optimum"
    assert "architecture 'gpt2'" in gpt2["generation"]["graph"]["fused_not_used"]


def test_export_refuses_a_decoder_for_an_encoder_task(hf, tmp_path):
    from onnxpipe_export import export

    with pytest.raises(errors.UnsupportedArchitectureError, match="text-generation supports"):
        export(hf["gpt2"][2], task="text-classification", out=tmp_path / "x", progress=False)
    with pytest.raises(errors.ExportError, match="fp16"):
        export(hf["gpt2"][2], task="text-generation", out=tmp_path / "y", precisions="fp16", progress=False)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
def test_low_bit_packing_is_what_matmulnbits_computes(op, bits, tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from onnxpipe_export._lowbit import _pack, quantize_nbits

    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 24)).astype(np.float32)  # K not a multiple of the block: padded
    bias = rng.normal(size=24).astype(np.float32) if op == "Gemm" else np.zeros(24, np.float32)
    # GPT-2's Conv1D layers export as Gemm with a bias; a transposed weight (transB) is the nn.Linear layout.
    node = (
        helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        if op == "Gemm"
        else helper.make_node("MatMul", ["x", "w"], ["y"])
    )
    inits = [numpy_helper.from_array(w.T.copy() if op == "Gemm" else w, "w"), numpy_helper.from_array(bias, "b")]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 24])],
        inits if op == "Gemm" else inits[:1],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    settings = {**_lowbit_int4(), "bits": bits, "accuracy_level": 0}
    recipe = quantize_nbits(tmp_path / "m.onnx", tmp_path / "q.onnx", settings)
    assert recipe["matmuls_quantized"] == 1
    packed, scales = _pack(w, 32, bits)
    q = (np.stack([packed & 15, packed >> 4], axis=-1) if bits == 4 else packed).reshape(24, -1).astype(np.float32)
    deq = ((q - 2 ** (bits - 1)) * np.repeat(scales.reshape(24, -1), 32, axis=1))[:, :40].T
    x = rng.normal(size=(3, 40)).astype(np.float32)
    y = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ deq + bias, atol=1e-4)
    step = np.abs(w).max() / (2 ** (bits - 1) - 1)
    assert np.abs(deq - w).max() <= step / 2 + 1e-6  # half a step of the grid


def _lowbit_int4():
    from onnxpipe_export._lowbit import INT4

    return dict(INT4)


def test_low_bit_folder_generates_and_records_its_agreement(tiny_export):
    folder = tiny_export("llama", "text-generation", precisions="fp32,int4")
    manifest = json.loads((folder / "manifest.json").read_text())
    recipe = manifest["variants"]["int4"]["recipe"]
    # the fused graph: q/k/v packed into one matmul, so 5 per layer (qkv, o, gate, up, down), and lm_head
    assert recipe["matmuls_quantized"] == 5 * 2 + 1 and recipe["matmuls_kept_fp32"] == 0
    g = onnxpipe.pipeline("text-generation", model=folder)
    assert g.precision == "int4"  # the CPU default where there is no int8
    out = g("Hello", max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert isinstance(out, str) and out


def test_int8_variant_of_the_fused_graph_generates(tiny_export):
    folder = tiny_export("llama", "text-generation", precisions="fp32,int8")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generation"]["graph"]["builder"] == "onnxpipe-fused"
    assert manifest["variants"]["int8"]["validation"]["prompts"] == 4
    g = onnxpipe.pipeline("text-generation", model=folder, precision="int8")
    out = g("Hello", max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert isinstance(out, str) and out


@pytest.mark.parametrize("precision,batched", [("int8", False), ("int4", False), ("fp32", True)])
def test_only_float_decoders_decode_prompts_in_batches(tiny_export, precision, batched):
    """A low-bit decoder rounds a row differently beside other rows (dynamic int8: activation scales over the
    batch; int4: MatMulNBits' kernels), and greedy decoding turns that into other tokens: such variants decode
    each prompt alone, whatever batch_size says; fp32 batches, and its batches equal one-by-one."""
    folder = tiny_export("llama", "text-generation", precisions=f"fp32,{precision}" if precision != "fp32" else "fp32")
    g = onnxpipe.pipeline("text-generation", model=folder, precision=precision)
    assert g.model.execution == ("batched" if batched else "alone")
    widths: list[int] = []
    run_batch = type(g)._run_batch

    def spy(self, batch, *args):
        widths.append(len(batch))
        return run_batch(self, batch, *args)

    kw = {"max_new_tokens": 8, "do_sample": False, "return_full_text": False}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(type(g), "_run_batch", spy)
        together = g(PROMPTS, batch_size=4, **kw)
    assert widths == ([len(PROMPTS)] if batched else [1] * len(PROMPTS))
    assert together == [g(x, **kw) for x in PROMPTS]


def test_cli_generate_streams_what_the_pipeline_returns(folders, pipes, capsys):
    from onnxpipe._cli import main

    want = pipes["gpt2"](PROMPTS[0], max_new_tokens=12, do_sample=False)[0]["generated_text"]
    for extra in (["--stream"], []):
        assert (
            main(
                ["generate", "--model", str(folders["gpt2"]), PROMPTS[0], "--max-new-tokens", "12", "--greedy", *extra]
            )
            == 0
        )
        assert capsys.readouterr().out == want + "\n"
    assert main(["generate", "--model", str(folders["gpt2"]), "Hi", "--temperature", "0", "--stream"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "temperature=0.0 is invalid" in captured.err
    assert main(["info", str(folders["gpt2"])]) == 0
    assert "greedy 128/128 tokens identical" in capsys.readouterr().out  # the export's figures, as `info` shows them


def test_bench_generate_smoke(folders, tmp_path):
    """bench/generate.py's onnxpipe and bare-session workers and its report run on a tiny folder (no timing
    assertions: the speed targets live in the bench's own output)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_generate", Path(__file__).parents[1] / "bench" / "generate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.NEW_TOKENS = 4
    rows = {
        "onnxpipe-fp32": bench.worker_onnxpipe(str(folders["llama"]), "fp32", 1),
        "bare-ort-fp32": bench.worker_bare(str(folders["llama"]), 1),
    }
    assert all(r[0]["new_tokens"] == 4 for r in rows.values())
    results = {
        "prompt_tokens": 32,
        "new_tokens": 4,
        "rounds": 1,
        "threads": 1,
        "unavailable": {"x/y": "why"},
        "models": {
            "tiny": {
                e: {
                    "ttft_ms": 1e3 * r[0]["ttft_s"],
                    "decode_tokens_per_s": r[0]["decode_tokens_per_s"],
                    "e2e_tokens_per_s": r[0]["e2e_tokens_per_s"],
                }
                for e, r in rows.items()
            }
        },
    }
    bench.write(results, tmp_path)
    report = (tmp_path / "generate.md").read_text()
    assert "Random weights: timing only" in report and "| tiny | onnxpipe-fp32 |" in report and "x/y: why" in report


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_other_llama_family_configs_export_and_match_generate(arch, tiny_export, tiny_checkpoint):
    """Qwen2 (q/k/v biases, tied embeddings) and Mistral (sliding window, one key/value head): the export's own
    validation (fp32 within 1e-4, greedy identical) passes, and the pipeline gives transformers' greedy text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_export(arch, "text-generation", precisions="fp32")
    path = tiny_checkpoint(arch, "text-generation")
    pair = (AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    g = onnxpipe.pipeline("text-generation", model=folder)
    for prompt in PROMPTS[:2]:
        want = pair[1].decode(_hf_generate(pair, prompt, max_new_tokens=24), skip_special_tokens=True)
        assert g(prompt, max_new_tokens=24, do_sample=False, return_full_text=False)[0]["generated_text"] == want


def _config(**changes):
    """The tiny test Llama's config with ``changes``."""
    from transformers import LlamaConfig

    from _tiny import _CONFIGS

    return LlamaConfig(**{**_CONFIGS["llama"], **changes})


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({}, None),
        ({"hidden_act": "gelu"}, "activation 'gelu'"),
        ({"hidden_size": 32}, "head size 8"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope scaling 'dynamic'"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, None),
    ],
)
def test_which_llama_configs_get_the_fused_graph(changes, reason):
    from onnxpipe_export._decoder_graph import fused_unsupported

    got = fused_unsupported(_config(**changes))
    assert got == reason if reason is None else reason in got


def test_a_config_the_fused_graph_does_not_cover_exports_through_optimum(tiny_checkpoint, tmp_path):
    """Dynamic rope scaling (tables that depend on the length) is left to optimum's traced graph; the export
    says so in the manifest and still passes its validation against PyTorch."""
    import shutil

    from onnxpipe_export import export

    src = shutil.copytree(tiny_checkpoint("llama", "text-generation"), tmp_path / "ckpt")
    config = json.loads((src / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    (src / "config.json").write_text(json.dumps(config))
    folder = export(src, task="text-generation", out=tmp_path / "out", precisions="fp32", progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generation"]["graph"]["builder"] == "optimum"
    assert "rope scaling 'dynamic'" in manifest["generation"]["graph"]["fused_not_used"]
    assert manifest["variants"]["fp32"]["validation"]["greedy_identical"]


@pytest.mark.parametrize(
    "rope",
    [
        {"rope_type": "linear", "factor": 2.0},
        {
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64},
    ],
    ids=lambda r: r["rope_type"],
)
def test_fused_graph_reproduces_rope_scalings(rope, tiny_checkpoint, tmp_path):
    """The fused graph's cos/sin tables come from transformers' own rope initialisation, scaling included
    (yarn's attention factor too): the export's validation (fp32 within 1e-4 of PyTorch, greedy identical)
    passes on the fused graph, which it would refuse if the tables were wrong."""
    import shutil

    from onnxpipe_export import export

    src = shutil.copytree(tiny_checkpoint("llama", "text-generation"), tmp_path / "ckpt")
    config = json.loads((src / "config.json").read_text())
    config["rope_scaling"] = rope
    (src / "config.json").write_text(json.dumps(config))
    folder = export(src, task="text-generation", out=tmp_path / "out", precisions="fp32", progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generation"]["graph"]["builder"] == "onnxpipe-fused"
    v = manifest["variants"]["fp32"]["validation"]
    assert v["greedy_identical"] and v["max_abs_logits_diff"] <= 1e-4
