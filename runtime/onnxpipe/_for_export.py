"""What the export stage uses of the runtime, in one place: the model-folder contract (the typed manifest),
the task table, and the runtime's own session, tokenizer and batching, through which an export validates and
times what it writes. The export stage imports nothing else of the runtime but ``onnxpipe``'s public names
and ``onnxpipe.errors`` (tests/test_layering.py checks it); anything it needs is re-exported here.
"""

from __future__ import annotations

from ._batching import plan_batches
from ._beam import beam_search
from ._bench import machine_info
from ._generate import KVCache, describe, generate_tokens
from ._info import format_manifest
from ._manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    OrtFormat,
    Pooling,
    TokenizerConfig,
    Variant,
    file_entry,
    load_manifest,
    sha256_file,
)
from ._model import OnnxModel
from ._pipelines._base import DEFAULT_BATCH_TOKENS
from ._sampling import Sampling
from ._seq2seq import Seq2SeqModel, sample_or_greedy
from ._seq2seq_config import merged_config, resolve
from ._session import OPTIMIZATION_LEVEL, save_ort_format
from ._tasks import GRAPHS, TABLE, export_task_names, served_tasks
from ._tokenizer import AutoTokenizer

__all__ = [
    "AutoTokenizer",
    "DEFAULT_BATCH_TOKENS",
    "FORMAT_VERSION",
    "GRAPHS",
    "KVCache",
    "MANIFEST_NAME",
    "Manifest",
    "OnnxModel",
    "OPTIMIZATION_LEVEL",
    "OrtFormat",
    "Pooling",
    "TABLE",
    "TokenizerConfig",
    "Variant",
    "export_task_names",
    "file_entry",
    "format_manifest",
    "load_manifest",
    "machine_info",
    "plan_batches",
    "Sampling",
    "Seq2SeqModel",
    "beam_search",
    "merged_config",
    "resolve",
    "sample_or_greedy",
    "describe",
    "generate_tokens",
    "save_ort_format",
    "sha256_file",
    "served_tasks",
]
