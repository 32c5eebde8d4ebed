"""The report page in a real browser: headless Chromium (Debian's `chromium`; .ci/run installs it)
loads index.html from disk, every image loads, no console message, a screenshot is written beside it;
PDFs are vector graphics."""

from __future__ import annotations

import re

import matplotlib
import pytest

matplotlib.use("Agg")

from alternet_pl import report  # noqa: E402
from alternet_pl.plots.pagecheck import check_page, find_chromium  # noqa: E402
from tests.test_report import make_run  # noqa: E402

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    runs = [
        make_run(root, "resnet", "resnet_cifar_micro", layout="[C, C, CC, CC]"),
        make_run(root, "vit", "vit_cifar_micro", spectrum=[[-18.0, 3.0], [-4.0, 2.0]]),
        make_run(root, "alternet", "alternet_cifar_micro", layout="[C, C, CM, CM]", error="lesion"),
    ]
    out = root / "figures"
    report.build_report(runs, out)
    return out


@pytest.mark.slow
def test_page_loads_every_image_without_console_messages(page):
    check = check_page(page / "index.html")
    figures = sorted(p.name for p in page.glob("*.png") if p.name != "screenshot.png")
    assert sorted(src for src, _, _ in check.images) == figures
    assert check.broken == [] and check.console == [] and check.errors == []
    assert check.overflow == 0  # the wide results table scrolls in its own box
    assert check.screenshot == page / "screenshot.png" and check.screenshot.stat().st_size > 10_000
    assert check.height > 1000


def _variant(page, folder, name: str, extra: str):
    """The report page with `extra` HTML before </body>, as `folder/<name>.html` beside copies of its
    figures; returns its path."""
    for png in page.glob("*.png"):
        (folder / png.name).write_bytes(png.read_bytes())
    path = folder / f"{name}.html"
    path.write_text((page / "index.html").read_text().replace("</body>", extra + "</body>"))
    return path


@pytest.mark.slow
def test_a_broken_image_and_a_console_error_are_caught(page, tmp_path):
    bad = _variant(page, tmp_path, "index", "<img src='gone.png'><script>console.error('x')</script>")
    check = check_page(bad)
    assert check.broken == ["gone.png"] and len(check.console) == 1 and not check.ok


@pytest.mark.slow
def test_a_table_wider_than_the_window_is_caught_and_the_reports_scroll_box_holds_it(page, tmp_path):
    """A 3,000-px table pushes the page past the window (the check says by how much); the same table in
    the report's scroll box (`.wide`, where the results table sits) does not."""
    table = "<table><tr><td style='min-width:3000px'>x</td></tr></table>"
    checks = {
        name: check_page(_variant(page, tmp_path, name, block), tmp_path / f"{name}.png")
        for name, block in (("bare", table), ("boxed", f"<div class='wide'>{table}</div>"))
    }
    assert checks["bare"].overflow > 1500 and not checks["bare"].ok and checks["bare"].broken == []
    assert checks["boxed"].overflow == 0 and checks["boxed"].ok


def test_pdfs_are_vector_graphics(page):
    pdfs = list(page.glob("*.pdf"))
    assert pdfs
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert not re.search(rb"/Subtype\s*/Image", data), f"{pdf.name} embeds a raster image"
