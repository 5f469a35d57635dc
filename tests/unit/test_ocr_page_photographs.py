"""ocr_page's line finding on photographed pages, without Triton: rendered pages degraded
the way cameras and networks degrade them (tests/photographed.py) must give every line,
whole, in reading order; clean pages and photographs without text what they gave before
the clean-up existed."""

from __future__ import annotations

import numpy as np
import pytest

import pages
import photographed
from i2tt_server.lines import Line, PageLineFinder, turned_back
from i2tt_server.page_cleanup import flatten, normalise_polarity, skew_angle
from i2tt_server.runners import PageReader
from i2tt_server.runners.ocr_page import PageSettings
from testdata import SEED_NAMES, seed_bytes

DEGRADED = {page.name: page for page in photographed.degraded_pages()}


@pytest.fixture(scope="module")
def reader() -> PageReader:
    return PageReader(PageSettings())


@pytest.fixture(scope="module")
def as_before() -> PageLineFinder:
    """The line finder without the clean-up: how ocr_page read pages before."""
    return PageLineFinder(clean_up=False)


def boxes(lines: list[Line]) -> list[tuple]:
    return [(line.x1, line.y1, line.x2, line.y2) for line in lines]


@pytest.mark.parametrize("name", sorted(DEGRADED))
def test_every_line_of_a_photographed_page_is_found_whole(reader, name):
    page = DEGRADED[name]
    found = reader.page(page.image)
    assert pages.line_problems(boxes(found.lines), page.boxes) == []
    assert len(found.crops) == len(page.boxes)


def test_without_the_clean_up_shaded_and_turned_pages_lose_lines(as_before):
    """What the clean-up is for: the old path cuts shaded ends off and finds nothing on a
    page turned 4 degrees."""
    failing = {name for name, page in DEGRADED.items()
               if pages.line_problems(boxes(as_before(page.image).boxes), page.boxes)}
    assert {"photographed one column, light falling to 0.25 on the left",
            "photographed one column, a hard shadow over a third",
            "photographed one column, turned -4 degrees",
            "photographed one column, turned 5 degrees"} <= failing


@pytest.mark.parametrize("page", [pages.one_column(), pages.two_columns(), pages.narrow_gutter(),
                                  pages.heading_and_columns(), pages.small(), pages.light_on_dark(),
                                  pages.noisy_scan(), pages.many_short_lines()],
                         ids=lambda page: page.name)
def test_clean_pages_give_the_boxes_they_gave_before(reader, as_before, page):
    """Flattening a page that is already flat moves no line by more than 2 pixels."""
    now = boxes(reader.page(page.image).lines)
    before = boxes(as_before(page.image).boxes)
    assert len(now) == len(before) == len(page.boxes)
    assert max(abs(a - b) for new, old in zip(now, before) for a, b in zip(new, old)) <= 2


@pytest.mark.parametrize("name", SEED_NAMES)
def test_photographs_without_text_still_give_no_lines(reader, name):
    page = pages.photo(seed_bytes(name))
    assert reader.page(page.image).lines == []


@pytest.mark.parametrize("degrees", [-7.0, -4.5, -2.0, 0.0, 1.5, 3.0, 6.0])
def test_skew_is_measured_to_a_few_tenths_of_a_degree(degrees):
    page = pages.rotated(pages.two_columns(), degrees)
    assert abs(skew_angle(flatten(normalise_polarity(page.image))) + degrees) <= 0.3


def test_a_turned_page_is_cropped_straight_and_boxed_as_sent():
    turned = pages.rotated(pages.one_column(), -4.0)
    layout = PageLineFinder()(turned.image)
    assert layout.skew == pytest.approx(4.0, abs=0.3)
    assert layout.image.size != turned.image.size  # turned with its corners kept
    # crops are cut from the straightened page: as tall as the text (26 px type), while the
    # boxes on the page as sent are the bounds of the turned lines (up to 86 px tall)
    assert max(line.height for line in layout.lines) < 40
    assert pages.line_problems(boxes(layout.boxes), turned.boxes) == []
    assert turned_back(Line(100, 200, 700, 230), 0.0, (900, 900), (900, 900)) == Line(100, 200, 700, 230)


def test_polarity_holds_under_uneven_light_and_on_a_dark_table():
    lamp_lit_dark_page = photographed.gradient(pages.light_on_dark())
    assert np.median(np.asarray(normalise_polarity(lamp_lit_dark_page.image))) > 128
    on_table = photographed.dark_border(photographed.gradient(pages.one_column()), share=0.3)
    grey = normalise_polarity(on_table.image)
    assert np.asarray(grey)[270 + 850, 300 + 950] > 200  # the paper's lit right end is light


def test_the_comparison_script_runs_its_finders():
    """scripts/compare_line_finders.py --photographed (docs/ocr_page.md) on one page."""
    import importlib.util

    from testdata import ROOT

    spec = importlib.util.spec_from_file_location("compare_line_finders",
                                                  ROOT / "scripts" / "compare_line_finders.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = DEGRADED["photographed one column, a hard shadow over a third"]
    found = {name: finder(page.image) for name, finder in script.photographed_finders().items()}
    truth = page.boxes
    assert pages.line_problems(boxes(found["cleaned"]), truth) == []
    assert pages.line_problems(boxes(found["as-is"]), truth) != []
