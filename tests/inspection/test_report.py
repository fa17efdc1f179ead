"""`ge report`: one self-contained HTML file, escaped, and drawn by a real browser (headless Chromium)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from guided_evolution.inspection.html_report import write_report
from guided_evolution.llm.records import CallRecord
from guided_evolution.runstore.records import ReflectionRecord
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.seeds import template_seed

PAYLOAD = (
    "</script><script>alert(1)</script>"
    "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
    "<script>document.body.setAttribute('data-pwned','2')</script>"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline run: template seed, no GPU, 2 generations, crossovers on."""
    root = tmp_path_factory.mktemp("report")
    seed = template_seed(root / "seed", generations=2, crossover_probability=1.0)
    here_json("run", str(seed), "--run-dir", str(root / "run"), cwd=root)
    return root / "run"


@pytest.fixture(scope="module")
def hostile_run(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the run whose LLM text, reflection, failure reason and persona carry script."""
    copy = Path(shutil.copytree(run, tmp_path_factory.mktemp("hostile") / "run"))
    index = RunIndex.open(copy / "index.sqlite")
    try:
        front = write_report(copy, copy.parent / "probe.html").front
        assert front
        from guided_evolution.inspection.run_data import load_run_data
        from guided_evolution.inspection.views_data import front_rows
        from guided_evolution.runstore.rundir import open_run

        paths, resolved = open_run(copy)
        best = front_rows(index, resolved.config)[0].id
        v = index.get_variant(best)
        call = index.record_call(
            CallRecord("mutation", "m", [{"role": "user", "content": PAYLOAD}], reply=PAYLOAD)
        )
        v.llm_call_id, v.persona, v.eot_reflection = call, PAYLOAD, PAYLOAD
        index.add_variant(v, replace=True)
        index.add_reflection(ReflectionRecord(best, PAYLOAD, elite_id=None))
        index.add_event("proposal_rejected", {"operator": "mutation", "reason": PAYLOAD})
        hostile = {k: PAYLOAD for k in ("backend", "filesystem", "network", "summary")}
        index.add_event("isolation", {**hostile, "layers": [PAYLOAD], "warnings": [PAYLOAD]})
        assert load_run_data(index, resolved, paths).variants[best].persona == PAYLOAD
    finally:
        index.close()
    return copy


# --------------------------------------------------------------------------- the file itself


def test_report_is_one_self_contained_file(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    summary = write_report(run, out)
    page = out.read_text()
    assert summary.path == str(out) and summary.bytes == len(page.encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"], "nothing else is written"
    # nothing to fetch: no external URL in any src/href, no <link>, CSP forbids any load
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(http" not in page
    assert "default-src 'none'" in page
    for title in (
        "Isolation of the evaluations",
        "Pareto front",
        "Best so far",
        "Operators and personas",
        "Failure reasons",
        "Lineage of the Pareto front",
        "EoT reflections along the best line",
    ):
        assert f">{title}</h2>" in page
    assert summary.plots >= 4 and page.count('<svg class="plot"') == summary.plots
    for row in ("offline-mutation", "offline-crossover"):
        assert f"<td>{row}</td>" in page
    assert "diff against the seed" in page and '<span class="add">' in page
    assert page.count("<script") == 1


def test_untrusted_text_is_escaped(hostile_run: Path, tmp_path: Path) -> None:
    write_report(hostile_run, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert page.count("<script") == 1, "only the report's own script"
    assert "alert(1)</script>" not in page and "<img" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("alert(1)") >= 3, (
        "the reply, the reflection, the failure and the persona are all shown"
    )
    isolation = page[page.index('<section id="isolation">') : page.index('<section id="front">')]
    assert isolation.count("alert(1)") >= 4, "backend, layers, aspects and warnings are shown"
    assert "<img" not in isolation and "<script" not in isolation


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "no chromium binary on PATH: `apt-get install -y --no-install-recommends chromium` to run this test"
    )


def _browse(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[bytes]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            *mode,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )


def _console_lines(stderr: bytes) -> list[str]:
    return [line for line in stderr.decode(errors="replace").splitlines() if ":CONSOLE" in line]


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit, non-interlaced PNG (grey, RGB or RGBA) as a uint8 array of shape (h, w, channels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0, "only 8-bit non-interlaced PNGs"
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    stride = width * channels
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), dtype=np.uint8).reshape(
        height, 1 + stride
    )
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = [0] * stride
    for y in range(height):
        kind, line = int(raw[y, 0]), raw[y, 1:]
        if kind == 0:
            cur = line.tolist()
        elif kind == 2:
            cur = ((line.astype(np.int32) + np.array(prev)) & 255).tolist()
        else:
            src, cur = line.tolist(), [0] * stride
            for i in range(stride):
                a = cur[i - channels] if i >= channels else 0
                if kind == 1:
                    cur[i] = (src[i] + a) & 255
                elif kind == 3:
                    cur[i] = (src[i] + ((a + prev[i]) >> 1)) & 255
                else:
                    b, c = prev[i], prev[i - channels] if i >= channels else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (src[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def test_decode_png_undoes_every_filter() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 4, 4), dtype=np.uint8)
    rows, prev = [], [0] * 16
    for y, kind in enumerate((0, 1, 2, 3, 4)):
        line = pixels[y].reshape(-1).tolist()
        out = []
        for i, value in enumerate(line):
            a, b, c = (line[i - 4] if i >= 4 else 0), prev[i], (prev[i - 4] if i >= 4 else 0)
            predicted = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            out.append((value - predicted) & 255)
        rows.append(bytes([kind, *out]))
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 5, 8, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
    assert (decode_png(png) == pixels).all()


def test_report_draws_in_headless_chromium(run: Path, tmp_path: Path) -> None:
    _chromium()
    page = tmp_path / "report.html"
    write_report(run, page)
    shot = tmp_path / "shot.png"
    proc = _browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,1500")
    assert shot.is_file(), proc.stderr.decode(errors="replace")[-2000:]
    assert not _console_lines(proc.stderr), _console_lines(proc.stderr)
    image = decode_png(shot.read_bytes())[:, :, :3].astype(np.int32)
    non_white = (image.min(axis=2) < 235).mean()
    colourful = ((image.max(axis=2) - image.min(axis=2)) > 60).sum()
    assert non_white > 0.05, f"the page looks blank ({non_white:.1%} non-white)"
    # the Pareto scatter (viridis points) and the progress plots (blue lines) are in the first 1500 px
    assert colourful > 1500, f"only {colourful} coloured pixels: the plots did not draw"
    dom = _browse(page, tmp_path, "--dump-dom")
    html = dom.stdout.decode(errors="replace")
    status = re.search(r'<footer id="ge-status"[^>]*>', html)
    assert status, html[-2000:]
    tag = status.group(0)
    assert 'data-ready="1"' in tag and 'data-errors="0"' in tag, tag
    assert int(re.search(r'data-plots="(\d+)"', tag).group(1)) >= 4
    assert not _console_lines(dom.stderr), _console_lines(dom.stderr)


def test_injected_script_stays_inert_in_the_browser(hostile_run: Path, tmp_path: Path) -> None:
    _chromium()
    page = tmp_path / "report.html"
    write_report(hostile_run, page)
    dom = _browse(page, tmp_path, "--dump-dom")
    html = dom.stdout.decode(errors="replace")
    assert 'data-ready="1"' in html and 'data-errors="0"' in html, html[-2000:]
    assert not re.search(r'<[^>]*\sdata-pwned="', html), "an injected script or handler ran"
    assert len(re.findall(r"<script", html)) == 1 and "<img" not in html
    assert "alert(1)" in html, "the text itself is still shown"
    assert not _console_lines(dom.stderr), _console_lines(dom.stderr)


# --------------------------------------------------------------------------- isolation


def _isolation_section(run_dir: Path, out: Path, *records: dict) -> str:
    """The report's isolation section after replacing the run's isolation events by ``records``."""
    index = RunIndex.open(run_dir / "index.sqlite")
    try:
        with index.transaction() as conn:
            conn.execute("DELETE FROM events WHERE kind = 'isolation'")
        for n, data in enumerate(records):
            index.add_event("isolation", data, when=1_700_000_000.0 + n)
    finally:
        index.close()
    write_report(run_dir, out)
    page = out.read_text()
    start, end = page.index('<section id="isolation">'), page.index('<section id="front">')
    assert start < end and start < page.index('<section id="progress">'), "near the top"
    return page[start:end]


def test_report_shows_isolation_with_uncontained_aspects_as_warnings(
    run: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    bwrap = {
        "backend": "bwrap",
        "layers": ["bwrap", "pid namespace", "network namespace"],
        "filesystem": "writes only in the variant directory and a private /tmp",
        "network": "none",
        "secrets": "environment scrubbed; run directory and home credentials hidden",
        "processes": "own pid namespace; dedicated uid; rlimits",
        "resources": "files up to 1024 MB each",
        "summary": "bwrap — writes only in the variant dir",
    }
    section = _isolation_section(copy, tmp_path / "a.html", bwrap)
    assert (
        "<td>backend</td><td>bwrap <span class=note>· layers: bwrap, pid namespace, network namespace<"
        in section
    )
    assert "<tr><td>network</td><td>none</td></tr>" in section
    assert "class=warn" not in section and "warnbox" not in section
    opened = {
        **bwrap,
        "backend": "none",
        "filesystem": "writable wherever ge's user can write",
        "network": "open",
        "warnings": ["evaluated code runs WITH network access"],
        "summary": "none — no sandbox",
    }
    section = _isolation_section(copy, tmp_path / "b.html", bwrap, opened)
    assert "<tr class=warn><td>backend</td><td>none (no sandbox)" in section
    assert "<tr class=warn><td>network</td><td>open (not contained)</td></tr>" in section
    assert (
        "<tr class=warn><td>filesystem</td><td>writable wherever ge&#x27;s user can write"
        in section
    )
    assert "<tr><td>secrets</td>" in section, "a contained aspect is not a warning"
    assert "<div class=warnbox>warning: evaluated code runs WITH network access</div>" in section
    assert "isolation changed during the run: bwrap → none" in section
    assert "bwrap — writes only in the variant dir" in section and "none — no sandbox" in section


def test_report_of_a_run_older_than_isolation_records(run: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    section = _isolation_section(copy, tmp_path / "r.html")
    assert "Isolation not recorded (run started before ge recorded its isolation)." in section


def test_report_shows_configured_planned_and_new_children_per_generation(
    run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    write_report(run, out)
    page = out.read_text()
    index = RunIndex.open(run / "index.sqlite")
    try:
        planned = {
            e.data["generation"]: e.data["plans"] for e in index.events("generation_started")
        }
        new = {
            e.data["generation"]: e.data["children"] for e in index.events("generation_finished")
        }
    finally:
        index.close()
    assert "<h3>children per generation</h3>" in page and sorted(planned) == [0, 1, 2]
    for gen in planned:
        cells = (
            gen,
            4,
            planned[gen],
            new[gen],
        )  # template_seed: initial_population = population = 4
        assert "<tr>" + "".join(f"<td class=num>{c}</td>" for c in cells) + "</tr>" in page
