"""`ge serve` in a real browser (headless Chromium over the DevTools protocol, `tests.support.cdp`):
a live run's page shows new variants without a reload, a click on a front point shows its diff,
the page says when the run finished, and a hostile variant's text stays text."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cdp import Browser, chromium, polling
from tests.support.seeds import template_seed
from tests.test_serve import PAYLOAD, Served, make_hostile

FOOTER = "document.getElementById('ge-status').dataset"
DELAY_S = 0.7  # each child's evaluation: the run stays live for ~20 s


@pytest.fixture()
def browser() -> Iterator[Browser]:
    binary = chromium()
    if binary is None:
        pytest.skip("no Chromium here (/usr/bin/chromium): the browser tests need one (.ci/run installs it)")
    with Browser(binary) as b:
        yield b


def _slow_seed(directory: Path) -> Path:
    """The template seed whose evaluation of a child takes `DELAY_S` (its check does not)."""
    seed = template_seed(directory, generations=5, population=4, initial_population=4)
    evaluate = seed / "evaluate.py"
    text = evaluate.read_text()
    assert 'if __name__ == "__main__":' in text
    evaluate.write_text(
        text.replace(
            'if __name__ == "__main__":',
            f'if __name__ == "__main__":\n    if "--check" not in sys.argv:\n        import time\n        time.sleep({DELAY_S})',
        )
    )
    return seed


def _front_point(b: Browser, seed: str) -> tuple[float, float, str] | None:
    """The centre of a front point of the plot other than the seed, scrolled into view."""
    return b.eval(
        "(() => { const c = [...document.querySelectorAll('#front-plot circle.front')]"
        f".find((e) => e.getAttribute('data-id') !== {seed!r}); if (!c) return null;"
        " c.scrollIntoView({block: 'center'}); const r = c.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2, c.getAttribute('data-id')]; })()"
    )


def test_a_live_run_updates_without_reload_and_a_click_shows_the_diff(browser: Browser, tmp_path: Path) -> None:
    seed, run = _slow_seed(tmp_path / "seed"), tmp_path / "run"
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", str(run)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    served = None
    try:
        polling(lambda: (run / "config.json").exists() and (run / "index.sqlite").exists(), timeout=120)
        served = Served(run)
        polling(lambda: served.json("/api/run/run/live")["points"], timeout=120)
        browser.navigate(f"http://127.0.0.1:{served.port}/run/run")
        n0, _ = browser.wait_for(f"{FOOTER}.ready === '1' && Number({FOOTER}.points)")
        assert browser.eval("document.getElementById('state').textContent").startswith("live (pid ")
        load = browser.eval(f"window.__mark = 42; {FOOTER}.load")
        more, _ = browser.wait_for(f"Number({FOOTER}.points) > {n0} && Number({FOOTER}.points)", timeout=60)
        assert more > n0 and browser.eval(f"window.__mark === 42 && {FOOTER}.load") == load, "no reload"
        seed_id = served.json("/api/run/run/live")["seed"]
        polling(lambda: _front_point(browser, seed_id), timeout=90, every=0.5)
        x, y, vid = _front_point(browser, seed_id)
        browser.click(x, y)
        shown, _ = browser.wait_for(
            "document.querySelector('#variant h2').textContent.includes("
            f"{vid!r}) && document.querySelectorAll('#diff pre.diff span.add, #diff pre.diff span.del').length"
        )
        assert shown > 0
        panel = browser.eval("document.querySelector('#variant').innerText")
        assert "against parent" in panel and "null" not in panel and "undefined" not in panel
        assert proc.wait(timeout=240) == 0, proc.stderr.read()[-2000:]
        browser.wait_for("document.getElementById('state').textContent === 'finished'", timeout=15)
        assert "completed 5 generations" in browser.eval("document.getElementById('reason').textContent")
        assert browser.eval(f"{FOOTER}.errors") == "0" and not browser.console_errors()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if served is not None:
            served.close()


def test_hostile_text_stays_text_in_the_browser(browser: Browser, template_run: Path, copy_run) -> None:
    run = copy_run(template_run)
    vid = make_hostile(run)
    served = Served(run)
    try:
        browser.call("Page.addScriptToEvaluateOnNewDocument", {"source": "window.__alerts = 0; window.alert = () => { window.__alerts += 1; };"})
        browser.navigate(f"http://127.0.0.1:{served.port}/run/run")
        browser.wait_for(f"{FOOTER}.ready === '1'")
        where = browser.eval(
            f"(() => {{ const b = document.querySelector('#front button[data-id=\"{vid}\"]');"
            " b.scrollIntoView({block: 'center'}); const r = b.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        browser.click(*where)
        browser.wait_for(f"document.querySelector('#variant h2').textContent.includes('{vid}') && !!document.querySelector('#diff pre')")
        browser.eval("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        text = browser.eval("document.body.innerText")
        assert browser.eval("document.body.dataset.pwned === undefined && window.__alerts === 0")
        assert browser.eval("document.querySelectorAll('img, iframe, object, embed').length") == 0
        assert browser.eval("document.querySelectorAll('script').length") == 1
        visible = PAYLOAD.split("\x1b")[0]
        assert text.count(visible) >= 5, "reply, persona, reflection, feedback, output, reason, isolation shown as text"
        assert browser.eval(f"{FOOTER}.errors") == "0" and not browser.console_errors()
    finally:
        served.close()


def test_the_runs_page_links_each_run(browser: Browser, template_run: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        shutil.copytree(template_run, tmp_path / "runs" / name)
    served = Served(tmp_path / "runs")
    try:
        browser.navigate(f"http://127.0.0.1:{served.port}/")
        browser.wait_for("document.querySelectorAll('#runs a').length === 2")
        assert browser.eval("[...document.querySelectorAll('#runs tbody tr')].map((r) => r.textContent)") == [
            f"{n}finished: completed 1 generations1 / 1{e}{f}0" for n, e, f in [("b", *_counts(served, "b")), ("a", *_counts(served, "a"))]
        ]
        where = browser.eval(
            "(() => { const r = document.querySelector('#runs a').getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        browser.click(*where)
        browser.wait_for(f"location.pathname === '/run/b' && {FOOTER}.ready === '1' && Number({FOOTER}.points) > 0")
        assert browser.eval("document.getElementById('title').textContent") == "b"
        assert browser.eval(f"{FOOTER}.errors") == "0" and not browser.console_errors()
    finally:
        served.close()


def _counts(served: Served, name: str) -> tuple[int, int]:
    counts = served.json(f"/api/run/{name}/live")["counts"]
    return counts["evaluated"], counts["failed"]
