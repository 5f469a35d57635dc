"""The benchmark's pieces: payloads, percentiles, ratios and the report on synthetic rows.
Timings are printed by the benchmark, never asserted."""

from __future__ import annotations

import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import report  # noqa: E402
from benchlib.inputs import Payloads, seed_images_dir  # noqa: E402
from benchlib.stats import Row, percentile  # noqa: E402
from benchlib.weights import STAMP, builder_digest, built_by_another  # noqa: E402


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 100) == 2.0


def test_every_request_gets_distinct_bytes():
    payloads = Payloads(seed_images_dir(ROOT))
    images = {payloads.photo(i) for i in range(12)}
    lines = {payloads.line(i) for i in range(6)}
    texts = {payloads.text(i) for i in range(50)}
    assert len(images) == 12 and len(lines) == 6 and len(texts) == 50
    assert payloads.photo(3) == payloads.photo(3)  # deterministic
    assert images.isdisjoint({(seed_images_dir(ROOT) / "example1.jpg").read_bytes()})


def test_ratios_and_report_on_synthetic_rows(tmp_path):
    def row(kind, label, images, wall, latency, concurrency=1, batch=1):
        return Row("caption_tags", kind, label, images, wall, [latency] * images,
                   concurrency=concurrency, batch_size=batch)

    rows = [row("seed", "seed", 4, 8.0, 2.0),
            row("inprocess", "b=8", 8, 4.0, 4.0, batch=8),
            row("served", "on c=1", 4, 8.4, 2.1),
            row("served", "on c=16", 16, 7.0, 7.0, concurrency=16),
            row("served-nobatch", "off c=16", 16, 30.0, 28.0, concurrency=16),
            row("inprocess-confidence", "b=8 with CONFIDENCE", 8, 4.2, 4.2, batch=8)]
    values = report.ratios(rows, "caption_tags")
    # the confidence row is no ceiling: only the plain in-process row of its batch size is
    assert round(values["confidence_cost"], 3) == round(4.0 / 4.2, 3)
    assert report.best_inprocess(rows, "caption_tags").kind == "inprocess"
    assert round(values["speedup_vs_seed"], 2) == round((16 / 7) / 0.5, 2)
    assert round(values["fraction_of_ceiling"], 3) == round((16 / 7) / 2, 3)
    assert round(values["single_request_p50"], 2) == 1.05
    met = {key: ok for key, _, _, _, ok in report.verdicts(values)}
    assert met == {"speedup_vs_seed": True, "fraction_of_ceiling": True, "single_request_p50": True}
    report.plot(rows, ["caption_tags"], tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 1000
    text = report.markdown(rows, ["caption_tags"], report.machine(), {"ratio_level": 16},
                           "plot.png", ["a note"])
    assert "| on c=16 |" in text and "a note" in text and "cores" in text
    assert "| in-process throughput with CONFIDENCE / without (same inputs) | 0.952 |" in text


def test_pages_of_the_in_flight_benchmark_and_its_report_keeping_earlier_models(tmp_path):
    import json

    import bench_inflight as bench
    from PIL import Image

    payloads = Payloads(seed_images_dir(ROOT))
    long, short = payloads.page(0, bench.LONG_PAGE), payloads.page(0, bench.SHORT_PAGE)
    assert Image.open(io.BytesIO(long)).height > Image.open(io.BytesIO(short)).height
    assert payloads.page(1, bench.SHORT_PAGE) != short  # distinct pages, deterministic
    assert payloads.page(0, bench.SHORT_PAGE) == short

    def path(name, short_s, first):
        return {"path": name, "alone_long_s": 10.0, "alone_short_s": 1.0,
                "pairs": [{"long_s": 12.0, "short_s": short_s, "short_first": first}]}

    static, inflight = path("static", 8.0, True), path("inflight", 2.0, True)
    ratios = bench.page_ratios(static, inflight)
    assert ratios[f"{bench.SHORT_PAGE}-line page sent after a {bench.LONG_PAGE}-line page: "
                  "latency"] == 0.25
    earlier = tmp_path / "INFLIGHT.json"
    earlier.write_text(json.dumps({"settings": {"arrivals": 40}, "results": {
        "t5_tags": {"static": {}, "inflight": {}, "ratios": {}},
        "ocr_page": {"static": {}, "inflight": {}, "ratios": {}}}}))
    kept = bench.earlier_results(earlier, ["ocr_page"])
    assert list(kept) == ["t5_tags"] and kept["t5_tags"]["settings"] == {"arrivals": 40}
    text = bench.markdown({"ocr_page": {"settings": {}, "static": static, "inflight": inflight,
                                        "ratios": ratios}})
    assert "| inflight | 10.00 | 1.00 | 2.00 | 12.00 | 1 of 1 |" in text


def test_weights_are_rebuilt_per_folder_when_the_builder_changed(tmp_path):
    """Each folder carries the digest of the builder that made it: another folder's
    rebuild does not make it current."""
    fresh, old, unstamped = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (fresh, old, unstamped):
        folder.mkdir()
    (fresh / STAMP).write_text(builder_digest() + "\n")
    (old / STAMP).write_text("0" * 64 + "\n")
    assert [built_by_another(f) for f in (fresh, old, unstamped)] == [False, True, True]
