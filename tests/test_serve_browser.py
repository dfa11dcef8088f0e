"""`mnist-gan serve` end to end in a real headless browser (Debian's chromium, chromium-driver, Selenium): the
page loads, a slider changes the picture, the digit picker draws one digit, two picked samples walk, a live run is
followed over several refreshes, and the screenshot is not blank. Skips in one line where no browser is installed,
except under CI=true, where a missing browser fails them: CI must not go green with the page untested.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from serve_browser import (
    browser,
    canvas_pixels,
    capture,
    missing_browser,
    renders,
    running_server,
    under_ci,
    wait_for,
)


@pytest.fixture(scope="session")
def real_browser() -> None:
    """Skip the test in one line where no browser is installed; under CI=true, fail it instead."""
    reason = missing_browser()
    if reason and under_ci():
        pytest.fail(f"CI=true, but the browser tests cannot run: {reason} (.ci/run installs chromium, "
                    "chromium-driver)", pytrace=False)
    if reason:
        pytest.skip(f"browser tests skipped: {reason}")


def test_ci_is_read_from_the_environment():
    assert under_ci({"CI": "true"}) and under_ci({"CI": "1"}) and under_ci({"CI": "True "})
    assert not any(under_ci(env) for env in ({}, {"CI": ""}, {"CI": "false"}, {"CI": "0"}))


HIDE_BROWSER = """
import shutil, sys
sys.path.insert(0, {tests!r})
import serve_browser
serve_browser.CHROMIUM, serve_browser.CHROMEDRIVER = ("/nonexistent/chromium",), ("/nonexistent/chromedriver",)
shutil.which = lambda name, *args, **kwargs: None
"""


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(tmp_path, ci):
    """The browser tests in a pytest of their own, on a machine made to have no chromium: an error (red, exit
    status 1) under CI=true, skipped (one line saying what to install) without it."""
    tests = Path(__file__).resolve().parent
    (tmp_path / "hide_browser.py").write_text(HIDE_BROWSER.format(tests=str(tests)))
    env = {**os.environ, "CI": ci, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                             "-p", "hide_browser", "-k", "in_a_real_browser", "-rEs", str(Path(__file__))],
                            capture_output=True, text=True, env=env, cwd=tests.parent, timeout=300)
    out = result.stdout
    if ci:
        assert result.returncode == 1, out
        assert "2 errors" in out and "CI=true, but the browser tests cannot run: no chromium browser" in out
    else:
        assert result.returncode == 0, out
        assert "2 skipped" in out and "browser tests skipped: no chromium browser" in out
    assert "passed" not in out


def severe_console_errors(driver) -> list[str]:
    """Errors the page logged (a failed request, a blocked resource, a script error)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_explore_slider_digit_and_walk_in_a_real_browser(real_browser, conditional_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with running_server(conditional_run) as url, browser() as driver:
        driver.get(url + "?seed=3&n=16")
        wait_for(driver, "return Number(document.getElementById('grid').dataset.renders || 0) > 0")
        before = np.array(canvas_pixels(driver, "grid"))
        assert before.std() > 5  # digits (or at least G's strokes) on a dark background, not an empty canvas

        count = renders(driver, "grid")
        slider = driver.find_element(By.ID, "slider-0")
        slider.send_keys(*[Keys.ARROW_RIGHT] * 25)  # a user dragging PC1 to +2.5 with the keyboard
        wait_for(driver, f"return Number(document.getElementById('grid').dataset.renders) > {count} "
                         "&& document.getElementById('slider-0').value === '2.5' && !busy")
        after = np.array(canvas_pixels(driver, "grid"))
        assert after.shape == before.shape
        assert np.abs(after.astype(int) - before).mean() > 1.0, "moving the slider did not change the image"
        assert "d=2.5" in driver.current_url  # the view is shareable as a URL

        driver.find_element(By.CSS_SELECTOR, "#digits button[data-digit='7']").click()
        wait_for(driver, "return grid && grid.labels && grid.labels.every((d) => d === 7) && !busy")
        assert "digit=7" in driver.current_url
        assert driver.find_element(By.CSS_SELECTOR, "#digits button.active").text == "7"

        canvas = driver.find_element(By.ID, "grid")
        cell = int(canvas.get_attribute("data-cell"))
        for column in (0, 3):  # pick samples 0 and 3: the walk between them appears
            driver.execute_script(
                "const c = arguments[0], r = c.getBoundingClientRect();"
                "c.dispatchEvent(new MouseEvent('click', {clientX: r.left + arguments[1], clientY: r.top + 10,"
                " bubbles: true}));", canvas, 2 + column * (cell + 2) + cell // 2)
        wait_for(driver, "return document.getElementById('walk').hidden === false && walk && walk.n === 9")
        assert "a=0" in driver.current_url and "b=3" in driver.current_url
        assert np.array(canvas_pixels(driver, "walk")).std() > 5
        assert severe_console_errors(driver) == []

        shot = capture(driver, driver.current_url, tmp_path / "explore.png")
    assert_not_blank(shot)


def assert_not_blank(path) -> None:
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 500 and image.shape[1] > 1000
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 200


class Feeder:
    """Plays a run that is training: appends a metrics line (and now and then a grid) every `interval` seconds."""

    def __init__(self, run_dir, interval: float = 0.25):
        self.run_dir, self.interval, self.stop = run_dir, interval, threading.Event()
        self.grid = (run_dir / "samples" / "iter_00000020.png").read_bytes()
        self.thread = threading.Thread(target=self.play, daemon=True)

    def play(self) -> None:
        iteration = 20
        while not self.stop.wait(self.interval):
            iteration += 5
            record = {"kind": "train", "iteration": iteration, "epoch": 1 + (iteration - 1) // 10,
                      "d_loss": 0.3 + 0.2 * np.sin(iteration / 20), "g_loss": 1.0 + 0.3 * np.cos(iteration / 15),
                      "d_x": 0.7, "d_g_z": 0.3, "images_per_s": 80.0, "time": time.time()}
            if iteration % 50 == 0:
                record["warnings"] = ["mode-collapse"]
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if iteration % 25 == 0:
                (self.run_dir / "samples" / f"iter_{iteration:08d}.png").write_bytes(self.grid)


def test_watch_follows_a_live_run_in_a_real_browser(real_browser, conditional_run, tmp_path):
    run = tmp_path / "live"
    shutil.copytree(conditional_run, run, symlinks=True)
    config = json.loads((run / "config.json").read_text())
    config["train"]["iterations"] = 100_000
    (run / "config.json").write_text(json.dumps(config))
    feeder = Feeder(run)
    with running_server(run, refresh=0.3) as url, browser() as driver:
        feeder.thread.start()
        try:
            driver.get(url)
            wait_for(driver, "return Number(document.body.dataset.watchPolls || 0) >= 1")
            seen = []
            for polls in (2, 4, 6):  # a few refreshes: the iteration, the curves and the grid move on
                wait_for(driver, f"return Number(document.body.dataset.watchPolls) >= {polls}")
                seen.append(driver.execute_script("return [run.status.iteration, run.train.length, run.shown]"))
            assert seen[0][0] < seen[1][0] < seen[2][0] and seen[0][1] < seen[2][1]
            assert seen[2][2] > 20  # a grid written during the test is shown
            assert driver.find_element("id", "state").text == "training"
            assert "ETA" in driver.find_element("id", "progress-text").text
            assert "mode-collapse" in driver.find_element("id", "warnings").text
            assert severe_console_errors(driver) == []
            png = driver.get_screenshot_as_png()
        finally:
            feeder.stop.set()
            feeder.thread.join()
    from PIL import Image

    path = tmp_path / "watch.png"
    Image.open(io.BytesIO(png)).save(path)
    assert_not_blank(path)
