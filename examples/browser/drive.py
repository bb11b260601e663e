"""Drive the demo page in headless Chromium (the system package, through the system chromedriver and selenium):
the browser test and bench/browser.py share it. Nothing here downloads a browser or a driver.

    >>> with DemoServer() as server, chromium() as browser:  # doctest: +SKIP
    ...     page = Page(browser, server.url + "/?model=minilm-sst2")
    ...     page.type_and_classify("I hate this so much!")
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

LOAD_TIMEOUT_S = 300  # 23-60 MB of model and a 27 MB .wasm to compile, on a shared 2-core machine


class BrowserMissingError(RuntimeError):
    """Chromium, chromedriver or selenium is not installed."""


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium that records the console, closed on exit."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise BrowserMissingError(
            "Chromium and chromedriver are not installed; `make test` installs them, or: "
            "apt-get install -y chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise BrowserMissingError("selenium is missing; install the test extra: pip install -e '.[test]'") from e
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,900"):
        options.add_argument(flag)
    # loopback only: any other host fails to resolve, so a request off this machine is a console error
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()


class Page:
    """The demo page, loaded: type a text and read the predictions, read the timings, run the latency button."""

    def __init__(self, browser: Any, url: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.b, self.by = browser, By
        browser.get(url)
        WebDriverWait(browser, LOAD_TIMEOUT_S).until(
            lambda b: self.ready or self.element("status").get_attribute("class") == "error"
        )
        if not self.ready:
            raise RuntimeError(f"the page did not load the model: {self.text('status')}; console: {self.errors()}")
        self.wait = WebDriverWait(browser, 600)

    @property
    def ready(self) -> bool:
        return bool(self.b.execute_script("return document.body.dataset.ready === '1'"))

    def element(self, element_id: str) -> Any:
        return self.b.find_element(self.by.ID, element_id)

    def text(self, element_id: str) -> str:
        return str(self.element(element_id).text)

    def timings(self) -> dict[str, float | None]:
        """load_ms (files + session), first_ms (first prediction), bench_ms (batch-1 p50, once measured)."""
        out: dict[str, float | None] = {}
        for key, element_id in (("load_ms", "load-ms"), ("first_ms", "first-ms"), ("bench_ms", "bench-ms")):
            value = self.text(element_id)
            out[key] = float(value) if value else None
        return out

    def type_and_classify(self, text: str) -> list[dict]:
        box = self.element("text")
        box.clear()
        box.send_keys(text)
        self.element("run").click()
        self.wait.until(lambda b: self.element("predictions").get_attribute("data-text") == text)
        labels = [e.text for e in self.b.find_elements(self.by.CSS_SELECTOR, ".prediction .label")]
        scores = [float(e.text) for e in self.b.find_elements(self.by.CSS_SELECTOR, ".prediction .score")]
        return [{"label": label, "score": score} for label, score in zip(labels, scores)]

    def predict_many(self, texts: list[str]) -> list[list[dict]]:
        """Through the page's hook (window.onnxpipeDemo), one text at a time, without typing each."""
        self.b.set_script_timeout(600)
        return list(
            self.b.execute_async_script(
                "const [texts, done] = arguments; (async () => { const out = [];"
                " for (const t of texts) out.push(await window.onnxpipeDemo.predict(t)); done(out); })();",
                texts,
            )
        )

    def measure_latency(self) -> float:
        """Click the latency button and wait for its batch-1 p50 (ms)."""
        self.element("bench").click()
        self.wait.until(lambda b: self.text("bench-ms") and not self.element("bench").get_attribute("disabled"))
        return float(self.text("bench-ms"))

    def errors(self) -> list[dict]:
        """Console entries at error level (the log is drained: each entry is returned once)."""
        return [e for e in self.b.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
