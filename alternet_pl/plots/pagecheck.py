"""Open the report page in headless Chromium from disk: every image loads, no console message, a screenshot.

Two Chromium runs, no remote-debugging protocol: (1) `--dump-dom` of a small probe page written beside
`index.html`, which loads it in an iframe (`--allow-file-access-from-files`) and lists every image with
its natural and displayed width, the page's height, and how far the page is wider than the window
(a table or figure outside a scroll box, cut off on screen); (2) `--screenshot` of `index.html` itself at
that height with logging on, whose `CONSOLE` lines are the page's console messages (the report has no
script, so any message is a fault). `python -m alternet_pl.plots.pagecheck figures/index.html`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from alternet_pl.errors import InputError

__all__ = ["PageCheck", "check_page", "find_chromium"]

_PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="page" src="{page}" style="width:{width}px;height:800px"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var out = [];
  try {{
    var doc = this.contentDocument, imgs = doc.images;
    out.push("HEIGHT " + doc.documentElement.scrollHeight);
    out.push("WIDTH " + doc.documentElement.scrollWidth + " " + doc.documentElement.clientWidth);
    for (var i = 0; i < imgs.length; i++) {{
      var im = imgs[i], ok = im.complete && im.naturalWidth > 0;
      var size = im.naturalWidth + " " + im.clientWidth + " ";
      out.push((ok ? "OK " : "BROKEN ") + size + im.getAttribute("src"));
    }}
  }} catch (e) {{ out.push("ERROR " + e); }}
  document.getElementById("result").textContent = out.join("\\n");
}});
</script></body></html>
"""


@dataclass
class PageCheck:
    """What the browser saw: per image (src, natural width, displayed width), broken images, console
    messages, probe errors, the page height, how many pixels the page is wider than the window
    (`overflow`; 0 when everything fits or scrolls inside its own box) and the screenshot written."""

    images: list[tuple[str, int, int]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    height: int = 0
    overflow: int = 0
    screenshot: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.broken or self.console or self.errors or self.overflow) and bool(self.screenshot)


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian's `chromium`), or None."""
    return next((p for n in ("chromium", "chromium-browser") if (p := shutil.which(n))), None)


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    base = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--disable-extensions"]
    return subprocess.run([args[0], *base, *args[1:]], capture_output=True, text=True, timeout=timeout)


def check_page(
    index: str | Path, screenshot: str | Path | None = None, width: int = 1280, timeout: float = 120.0
) -> PageCheck:
    """Load `index` in headless Chromium; write a full-page screenshot (default: `screenshot.png`
    beside it). Raises `InputError` when the page or Chromium is missing."""
    index = Path(index).resolve()
    if not index.is_file():
        raise InputError(f"{index} not found; write the report first (python -m alternet_pl.report ...)")
    chromium = find_chromium()
    if chromium is None:
        raise InputError("chromium not found; install it (Debian: apt-get install -y chromium)")
    shot = Path(screenshot) if screenshot else index.with_name("screenshot.png")
    probe = index.with_name(".pagecheck.html")
    probe.write_text(_PROBE.format(page=index.name, width=width))
    check = PageCheck()
    try:
        dom = _run(
            [
                chromium,
                "--allow-file-access-from-files",
                "--virtual-time-budget=15000",
                "--dump-dom",
                probe.as_uri(),
            ],
            timeout,
        ).stdout
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    for line in (match.group(1) if match else "ERROR the probe page did not report").splitlines():
        word, _, rest = line.partition(" ")
        if word == "HEIGHT":
            check.height = int(rest)
        elif word == "WIDTH":
            scroll, client = (int(v) for v in rest.split())
            check.overflow = max(0, scroll - client)
        elif word in ("OK", "BROKEN"):
            natural, shown, src = rest.split(" ", 2)
            check.images.append((src, int(natural), int(shown)))
            if word == "BROKEN":
                check.broken.append(src)
        elif line.strip():
            check.errors.append(line.strip())
    height = min(max(check.height, 600), 30000)
    shot.unlink(missing_ok=True)
    res = _run(
        [
            chromium,
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={width},{height}",
            f"--screenshot={shot.resolve()}",
            "--virtual-time-budget=15000",
            index.as_uri(),
        ],
        timeout,
    )
    check.console = [ln.split("CONSOLE", 1)[1] for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    check.screenshot = shot if shot.is_file() and shot.stat().st_size > 0 else None
    if check.screenshot is None:
        check.errors.append(f"no screenshot written (chromium exit {res.returncode})")
    return check


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise InputError("usage: python -m alternet_pl.plots.pagecheck PATH/index.html")
    check = check_page(args[0])
    for src, natural, shown in check.images:
        print(f"{src}: {natural} px shown at {shown} px")
    for label, items in (("broken image", check.broken), ("console", check.console), ("error", check.errors)):
        for item in items:
            print(f"{label}: {item}")
    if check.overflow:
        print(
            f"layout: the page is {check.overflow} px wider than the window "
            "(a table or figure outside a scroll box)"
        )
    print(f"screenshot: {check.screenshot}")
    return 0 if check.ok else 1


if __name__ == "__main__":
    from alternet_pl.errors import run_command

    sys.exit(run_command(main, sys.argv[1:]))
