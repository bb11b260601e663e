"""``onnxpipe predict`` on real streams, in a subprocess: what only real file descriptors and signals show.

Bytes in (a bare \\r, invalid UTF-8 under a strict stdin encoding), stdout that cannot take the output
(/dev/full, closed, a reader that leaves), and SIGTERM/SIGHUP in the middle of a long input.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import onnxpipe

CLI = [sys.executable, "-m", "onnxpipe._cli"]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([*CLI, *args], timeout=300, **kwargs)


def assert_one_error_line(stderr: bytes, pattern: str) -> None:
    err = stderr.decode()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert pattern in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_file_and_stdin_split_lines_the_same_way(tmp_path):
    # "good\rbad" is one line: a file read with universal newlines made it two, shifting every later result
    data = b"good\rbad\nfine\r\n\xff awful\nlast"
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    from_file = run(["predict", "--input", str(path)])
    from_stdin = run(["predict", "-"], input=data, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert from_file.returncode == from_stdin.returncode == 0, from_file.stderr + from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout
    got = [json.loads(line) for line in from_file.stdout.decode().splitlines()]
    want = onnxpipe.pipeline("sentiment-analysis")(["good\rbad", "fine", "\ufffd awful", "last"])
    assert [g["label"] for g in got] == [w["label"] for w in want]
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], abs=1e-6)


@pytest.mark.parametrize("command", [["predict", "good"], ["info", "minilm-sst2", "--json"]])
def test_a_full_disk_is_one_error_line(command):
    with open("/dev/full", "wb") as full:
        result = run(command, stdout=full)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "No space left on device")


@pytest.mark.parametrize("command", [["predict", "good"], ["info", "minilm-sst2"]])
def test_a_closed_stdout_is_one_error_line(command):
    result = subprocess.run(["bash", "-c", 'exec "$0" "$@" >&-', *CLI, *command], stderr=subprocess.PIPE, timeout=300)
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "stdout is closed")


def _many_lines(tmp_path, n: int) -> str:
    path = tmp_path / "many.txt"
    path.write_text("a good movie\n" * n, encoding="utf-8")
    return str(path)


def test_a_reader_that_leaves_ends_the_run_quietly(tmp_path):
    # `| head -1`: one chunk of 2,048 results (~100 KB) overflows the pipe after the reader has gone. A guard
    # (this already exited 0): the exit must stay 0, with no "Exception ignored" from the flush at exit.
    proc = subprocess.Popen(
        [*CLI, "predict", "--input", _many_lines(tmp_path, 2048)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert json.loads(proc.stdout.readline())["label"] == "POSITIVE"
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and err == b"", err.decode()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_stream_keeps_every_finished_result(sig, tmp_path):
    out_path = tmp_path / "out.jsonl"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "predict", "--input", _many_lines(tmp_path, 20_000)], stdout=out, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 300
        while out_path.stat().st_size == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # results are on their way: the first chunk is being written
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err.decode()
    data = out_path.read_bytes()
    assert data.endswith(b"\n")  # no result cut in half: what was written reached the file whole
    rows = [json.loads(line) for line in data.decode().splitlines()]
    assert len(rows) >= 1 and all(r["label"] == "POSITIVE" for r in rows)
