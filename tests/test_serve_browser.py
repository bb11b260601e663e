"""The playground page at ``/`` in a real headless Chromium (the system package, driven by selenium through
the system chromedriver): it loads, a prediction appears, the embeddings view ranks the examples, the model
picker offers each served model's tasks, the chat task streams a generation model's reply, and the browser
logs no errors.

This test fails, not skips, where Chromium is missing: ``make test`` installs it (Debian: chromium,
chromium-driver). ``ONNXPIPE_UPDATE_SCREENSHOT=1`` also refreshes bench/results/serve_playground.png.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("starlette", reason="needs the serve extra: pip install 'onnxpipe[serve]'")

from _serve_util import ROOT, Server  # noqa: E402
from onnxpipe import pipeline  # noqa: E402

SST2 = str(ROOT / "models" / "minilm-sst2")
SCREENSHOT = ROOT / "bench" / "results" / "serve_playground.png"


def _chrome():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail(
            "Chromium and chromedriver are not installed; `make test` installs them, or: "
            "apt-get install -y chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing; install the test extra: pip install -e '.[serve,test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,720"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def test_playground_predicts_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    text = "I hate this so much!"
    want = pipeline("text-classification", model=SST2)(text, top_k=None)
    with Server(SST2) as server:
        browser = _chrome()
        try:
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 60)
            wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")
            box = browser.find_element(By.ID, "text")
            box.clear()
            box.send_keys(text)
            browser.find_element(By.ID, "run").click()
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".prediction"))
            labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".prediction .label")]
            scores = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, ".prediction .score")]
            assert labels == [r["label"] for r in want]
            assert scores == pytest.approx([r["score"] for r in want], abs=1e-3)
            shot = tmp_path / "playground.png"
            browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 1000
            if os.environ.get("ONNXPIPE_UPDATE_SCREENSHOT"):
                shutil.copyfile(shot, SCREENSHOT)

            Select(browser.find_element(By.ID, "task")).select_by_value("/embed")
            box.clear()
            box.send_keys("What a wonderful movie.")
            browser.find_element(By.ID, "run").click()
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".prediction")) == 5)
            shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".prediction .label")]
            cosines = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, ".prediction .score")]
            embed = pipeline("sentence-embeddings", model=SST2)
            query, examples = embed("What a wonderful movie."), embed(shown)
            want_cos = [float(query @ v) for v in examples]
            assert cosines == pytest.approx(want_cos, abs=2e-2)
            assert cosines == sorted(cosines, reverse=True)  # nearest first

            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert errors == []
        finally:
            browser.quit()


@pytest.mark.torch
def test_playground_picks_the_model_and_streams_a_chat_reply(tiny_export):
    """Two models: the model picker offers each one's tasks, and the chat task shows the reply as server-sent
    events arrive, equal to the in-process pipeline's greedy answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    llama = tiny_export("llama", "text-generation", precisions="fp32")
    text, tokens = "What time does the train leave?", 16
    chat = pipeline("text-generation", model=llama)
    messages = [{"role": "user", "content": text}]
    want = chat(messages, max_new_tokens=tokens, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert want  # a reply to compare (the tiny model's tokens are random, not empty)
    with Server(f"sst2={SST2}", f"chat={llama}") as server:
        browser = _chrome()
        try:
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 60)
            wait.until(lambda b: b.execute_script("return document.body.dataset.ready") == "1")
            model, task = Select(browser.find_element(By.ID, "model")), Select(browser.find_element(By.ID, "task"))
            assert [o.get_attribute("value") for o in model.options] == ["sst2", "chat"]
            assert "/predict" in [o.get_attribute("value") for o in task.options]
            assert "/v1/chat/completions" not in [o.get_attribute("value") for o in task.options]
            model.select_by_value("chat")
            assert [o.get_attribute("value") for o in task.options] == ["/v1/chat/completions"]
            box = browser.find_element(By.ID, "text")
            box.clear()
            box.send_keys(text)
            extra = browser.find_element(By.ID, "extra-input")
            extra.clear()
            extra.send_keys(str(tokens))
            browser.find_element(By.ID, "run").click()
            wait.until(lambda b: b.execute_script("return document.getElementById('generated')?.dataset.done") == "1")
            shown = browser.find_element(By.ID, "generated")
            assert browser.execute_script("return document.getElementById('generated').textContent") == want
            assert int(shown.get_attribute("data-chunks")) > 1  # shown piece by piece, as the tokens came
            model.select_by_value("sst2")
            assert task.first_selected_option.get_attribute("value") == "/predict"  # its main task
            errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert errors == []
        finally:
            browser.quit()
