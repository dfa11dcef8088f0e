"""Drive `mnist-gan serve` in a real headless browser: Debian's chromium through chromium-driver and Selenium.
Used by tests/test_serve_browser.py, and run by hand to make the documentation's screenshot:

    python tests/serve_browser.py RUN_DIR docs/images/serve.png [--query "seed=7&n=16&digit=all&a=0&b=5"]

Never downloads a browser: it uses /usr/bin/chromium and /usr/bin/chromedriver, or says what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import threading
import time
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)
WINDOW = (1440, 1000)  # CSS pixels: both panels side by side, as on a laptop screen
STARTUP_SECONDS = 30.0  # the server loads a checkpoint and finds its directions before it answers


def under_ci(environ=os.environ) -> bool:
    """Whether this is a CI run (CI=true, as GitHub Actions, GitLab and .ci/run set it): there the browser tests
    must run, and a missing browser fails them instead of skipping them."""
    return environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (one line), or None when they can."""
    for module in ("starlette", "uvicorn"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed: mnist-gan serve's extra is missing (pip install -e '.[serve]')"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not any(Path(p).exists() for p in CHROMIUM) and not shutil.which("chromium"):
        return "no chromium browser (apt-get install chromium chromium-driver)"
    if not any(Path(p).exists() for p in CHROMEDRIVER) and not shutil.which("chromedriver"):
        return "no chromedriver (apt-get install chromium-driver)"
    return None


@contextlib.contextmanager
def running_server(source: str | Path, refresh: float = 2.0):
    """Serve `source` on a free loopback port in a background thread; yield its URL."""
    import uvicorn

    from mnist_gan.serve.app import allowed_hosts, bind, build_app, url_of
    from mnist_gan.serve.webapi import Api

    sock = bind("127.0.0.1", 0)
    app = build_app(Api(source, refresh), allowed_hosts("127.0.0.1"))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url_of(sock, "127.0.0.1")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def browser(size: tuple[int, int] = WINDOW):
    """A headless chromium driven by Selenium, with its console log kept (for checking that nothing failed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next((p for p in CHROMIUM if Path(p).exists()), shutil.which("chromium") or "")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={size[0]},{size[1]}", "--force-device-scale-factor=1", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = next((p for p in CHROMEDRIVER if Path(p).exists()), shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(2 * size[0] - inner[0], 2 * size[1] - inner[1])  # the page sees exactly `size`
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float = 20.0):
    """Run `script` (JavaScript returning a value) until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value or time.monotonic() > deadline:
            if not value:
                raise TimeoutError(f"waited {timeout:g}s for: {script}")
            return value
        time.sleep(0.1)


def canvas_pixels(driver, element_id: str) -> list[int]:
    """The gray level of every pixel of a canvas (its red channel; the tiles are gray)."""
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "const out = new Array(d.length / 4); for (let i = 0; i < out.length; i++) out[i] = d[4 * i];"
        "return out;", element_id)


def renders(driver, element_id: str) -> int:
    return int(driver.execute_script(f"return Number(document.getElementById('{element_id}').dataset.renders || 0)"))


def capture(driver, url: str, path: str | Path) -> Path:
    """Open the page at `url` in `driver`, let it draw (grid, walk, run, charts), and save a PNG of the window."""
    driver.get(url)
    if driver.execute_script("return document.getElementById('explore-body').hidden === false"):
        wait_for(driver, "return Number(document.getElementById('grid').dataset.renders || 0) > 0 && !busy")
    if driver.execute_script("return document.getElementById('watch').hidden === false"):
        wait_for(driver, "return Number(document.body.dataset.watchPolls || 0) > 0 "
                         "&& document.getElementById('run-grid').complete")
    time.sleep(0.5)  # the walk's animation shows a frame
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    return Path(path)


def screenshot(url: str, path: str | Path) -> Path:
    """The page at `url`, as a PNG of a WINDOW-sized browser window."""
    with browser() as driver:
        return capture(driver, url, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a run directory or a checkpoint")
    parser.add_argument("out", help="PNG to write")
    parser.add_argument("--query", default="", help="the page's parameters, e.g. seed=7&n=16&a=0&b=5")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        raise SystemExit(f"cannot take a screenshot: {reason}")
    with running_server(args.source) as url:
        print(screenshot(url + ("?" + args.query if args.query else ""), args.out))


if __name__ == "__main__":
    main()
