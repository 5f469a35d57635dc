"""ocr_page on a real tritonserver: rendered pages whose lines are known.

With tiny random weights the recognised text is gibberish, so the tests assert what can be
known: how many lines, where (IoU against the rendered boxes), in which order, that TEXT is
the lines joined, that each line's text is what trocr_ocr answers for the same crop, and
that lines of several pages were read in shared trocr_ocr batches.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from tritonclient.utils import InferenceServerException

import pages
import photographed
from i2tt_server.runners import PageReader
from i2tt_server.runners.ocr_page import PageSettings
from triton_calls import OUTPUTS, infer_concurrently, same_confidence, settled_statistics, tolerance

TEXT_PAGES = {page.name: page for page in [*pages.text_pages(), *photographed.degraded_pages()]}


@pytest.fixture(scope="module")
def reader() -> PageReader:
    """The same page logic, in this process (no line reader: only finding and cropping)."""
    return PageReader(PageSettings())


@pytest.fixture(scope="module")
def answers(grpc_client, seed_images) -> dict:
    """Every test page, sent a dozen at once (so they share batches, and stay within
    ocr_page's queue of 16 on the CPU profile), by page name."""
    sent = [*TEXT_PAGES.values(), pages.blank(), pages.photo(seed_images["human1.png"])]
    results = []
    for start in range(0, len(sent), 12):
        results += infer_concurrently(grpc_client, "ocr_page",
                                      [{"IMAGE": [p.png()]} for p in sent[start:start + 12]])
    return {page.name: result for page, result in zip(sent, results)}


def lines_of(row: dict) -> list[dict]:
    return json.loads(row["LINES"])


def rows_of(out: str) -> list[str]:
    """The rows of the command's text output, each ended by a newline. Not
    ``str.splitlines()``: it also splits at \\x1c-\\x1e, \\x85 and \\u2028, which the tiny
    random weights' gibberish may hold (TrOCR's byte-level tokens: the test weights that
    `make test-image-env` builds read one line of the letter with \\x1c in it)."""
    return out.removesuffix("\n").split("\n")


@pytest.mark.parametrize("name", sorted(TEXT_PAGES))
def test_lines_are_found_where_they_are_in_reading_order(answers, name):
    page = TEXT_PAGES[name]
    (row,) = answers[name]
    lines = lines_of(row)
    # line i must be truth line i, whole: this checks the boxes and the reading order at once
    assert pages.line_problems([tuple(line["box"]) for line in lines], page.normalised()) == []
    assert row["TEXT"] == "\n".join(line["text"] for line in lines)
    assert all(0.0 <= v <= 1.0 for line in lines for v in line["box"])


@pytest.mark.parametrize("name", ["one column", "two columns", "light on dark",
                                  "one column, turned 3 degrees"])
def test_line_texts_are_trocr_ocr_on_the_same_crops(grpc_client, triton, answers, reader, name):
    page = TEXT_PAGES[name]
    (row,) = answers[name]
    local = reader.page(page.image)
    answered = infer_concurrently(grpc_client, "trocr_ocr", [{"IMAGE": [c]} for c in local.crops],
                                  OUTPUTS["trocr_ocr"])
    direct = [rows[0]["TEXT"] for rows in answered]
    lines = lines_of(row)
    assert [line["text"] for line in lines] == direct
    # and each line's confidence trocr_ocr's for that crop (LINES rounds it to 6 decimals)
    assert [line["confidence"] for line in lines] == [
        same_confidence(rows[0], "trocr_ocr", triton.device, abs=5e-7) for rows in answered]
    assert [line["box"] for line in lines] == json.loads(
        reader_lines_json(local))  # the server found the same boxes as the plain Python logic
    assert len(set(direct)) > 1, "random weights should still read different lines differently"


def reader_lines_json(local) -> str:
    from i2tt_server.runners.ocr_page import Reading, lines_json

    readings = [Reading("", 0.0)] * len(local.lines)
    return json.dumps([line["box"] for line in json.loads(lines_json(local, readings))])


@pytest.mark.parametrize("name", ["blank", "photo without text"])
def test_a_page_without_text_gives_empty_text_and_no_lines(answers, name):
    (row,) = answers[name]
    assert row == {"TEXT": "", "LINES": "[]"}


def test_lines_of_several_pages_share_trocr_batches(grpc_client, triton):
    sent = [pages.render(f"note {i}", (640, 260), [(30, 560)], 3, 24, seed=100 + i)
            for i in range(6)]
    before = settled_statistics(triton, "trocr_ocr")
    results = infer_concurrently(grpc_client, "ocr_page", [{"IMAGE": [p.png()]} for p in sent])
    after = settled_statistics(triton, "trocr_ocr")
    assert [len(lines_of(r[0])) for r in results] == [3] * 6
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 18
    # each page alone would need at least one execution of its own
    assert executions < len(sent), f"{executions} trocr_ocr executions for {len(sent)} pages"


def test_undecodable_page_fails_alone(grpc_client):
    good = [pages.small(seed=40 + i) for i in range(3)]
    requests = [{"IMAGE": [p.png()]} for p in good]
    requests.insert(1, {"IMAGE": [b"%PDF-1.7 not an image"]})
    results = infer_concurrently(grpc_client, "ocr_page", requests)
    error = results[1]
    assert isinstance(error, InferenceServerException)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "IMAGE is not a decodable image" in error.message()
    for page, result in zip(good, results[:1] + results[2:]):
        assert len(lines_of(result[0])) == len(page.boxes)


# ---- the client and the command line ---------------------------------------------------

@pytest.fixture(scope="module")
def page_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pages")
    files = {}
    for name, page in (("letter.png", pages.one_column(seed=60)),
                       ("columns.png", pages.two_columns(seed=61)), ("blank.png", pages.blank())):
        page.image.save(root / name)
        files[name] = (root / name, page)
    return files


def test_client_ocr_page_gives_typed_pages(triton, grpc_client, page_files):
    from i2tt_client import I2TTClient, PageText, TextLine

    def near(lines):
        """The lines as another reading of the page must give them: confidences within
        the tolerance of lines read in other trocr_ocr batches, and LINES' rounding."""
        rel = tolerance("ocr_page", triton.device)
        return [TextLine(line.text, line.box, pytest.approx(line.confidence, rel=rel, abs=5e-7))
                for line in lines]

    paths = [page_files[n][0] for n in ("letter.png", "columns.png", "blank.png")]
    with I2TTClient(triton.grpc_url) as client:
        results = client.ocr_page(paths)
        single = client.ocr_page(paths[0])
    assert all(isinstance(r, PageText) for r in results)
    assert single.text == results[0].text and single.lines == near(results[0].lines)
    assert all(0 < line.confidence <= 1 for r in results for line in r.lines)
    for path, result in zip(paths, results):
        ((row,),) = infer_concurrently(grpc_client, "ocr_page", [{"IMAGE": [path.read_bytes()]}])
        want = lines_of(row)
        assert result.text == row["TEXT"]
        assert [TextLine(w["text"], tuple(w["box"]), w["confidence"]) for w in want] == \
            near(result.lines)
    assert results[2].text == "" and results[2].lines == []
    assert len(results[1].lines) == len(page_files["columns.png"][1].boxes)


def test_cli_ocr_page_formats_and_draw(triton, page_files, tmp_path, capsys, monkeypatch):
    from i2tt_client.cli import main

    monkeypatch.setenv("I2TT_SERVER", triton.grpc_url)
    letter, page = page_files["letter.png"]

    def run(*argv):
        code = main(list(argv))
        return code, capsys.readouterr().out

    code, out = run("ocr", "--page", str(letter), "--format", "jsonl")
    assert code == 0
    row = json.loads(out)
    assert row["input"] == str(letter) and row["error"] is None
    assert len(row["lines"]) == len(page.boxes)
    assert row["text"] == "\n".join(line["text"] for line in row["lines"])

    code, out = run("ocr", "--page", str(letter), str(page_files["blank.png"][0]), "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["lines"] == row["lines"] and rows[1]["lines"] == [] and rows[1]["text"] == ""

    code, out = run("ocr", "--page", str(letter), "--format", "csv")
    assert code == 0
    (record,) = list(csv.DictReader(io.StringIO(out)))
    assert json.loads(record["lines"]) == row["lines"] and record["text"] == row["text"]

    code, out = run("ocr", "--page", str(letter))
    assert code == 0
    text_lines = rows_of(out)
    assert text_lines[0] == str(letter) and len(text_lines) == 1 + len(page.boxes)
    assert all(line.startswith("  - [") for line in text_lines[1:])

    drawn_path = tmp_path / "lines.png"
    code, _ = run("ocr", "--page", str(letter), "--draw", str(drawn_path), "--format", "jsonl")
    assert code == 0
    drawn = Image.open(drawn_path).convert("RGB")
    assert drawn.size == page.image.size
    # the outlines are coloured; the rendered page itself is black on white only
    x1, y1, x2, y2 = (round(v) for v in page.boxes[0])
    colours = {drawn.getpixel((x, y)) for x in range(max(0, x1 - 8), x2 + 8)
               for y in range(max(0, y1 - 8), min(drawn.height, y2 + 8))}
    assert any(len({r, g, b}) > 1 for r, g, b in colours), "no line outlined near line 1"

    with pytest.raises(SystemExit, match="needs --page"):
        main(["ocr", str(letter), "--draw", str(tmp_path / "x.png")])


def test_cli_min_confidence_leaves_out_doubtful_lines_and_says_how_many(
        triton, page_files, capsys, monkeypatch):
    from i2tt_client.cli import main

    monkeypatch.setenv("I2TT_SERVER", triton.grpc_url)
    letter = str(page_files["letter.png"][0])

    def run(*argv):
        code = main(["ocr", "--page", letter, *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out, err

    out, err = run("--format", "jsonl")
    every = json.loads(out)["lines"]
    assert "left out" not in err
    # a threshold halfway between two of the page's confidences: the lower half goes
    ordered = sorted(line["confidence"] for line in every)
    middle = len(ordered) // 2
    threshold = (ordered[middle - 1] + ordered[middle]) / 2
    assert ordered[middle - 1] < threshold < ordered[middle], "tiny weights: distinct confidences"
    out, err = run("--min-confidence", f"{threshold:.6f}", "--format", "jsonl")
    kept = json.loads(out)
    assert kept["lines"] == [line for line in every if line["confidence"] >= threshold]
    assert kept["text"] == "\n".join(line["text"] for line in kept["lines"])
    assert f"left out {middle} lines" in err
    out, err = run("--min-confidence", "0")
    assert len(rows_of(out)) == 1 + len(every) and "left out 0 lines" in err
    # the text output shows each line's confidence after its box
    assert [line.split("] ")[1].startswith(f"({c['confidence']:.3f}) ")
            for line, c in zip(rows_of(out)[1:], every)] == [True] * len(every)
    with pytest.raises(SystemExit, match="needs --page"):
        main(["ocr", letter, "--min-confidence", "0.5"])
    with pytest.raises(SystemExit):
        main(["ocr", "--page", letter, "--min-confidence", "1.5"])


def test_readme_ocr_page_command(triton, page_files, tmp_path):
    """`i2tt ocr --page letter.png --draw lines.png` as the README shows it."""
    letter, page = page_files["letter.png"]
    shutil.copy(letter, tmp_path / "letter.png")
    done = subprocess.run([str(Path(sys.executable).parent / "i2tt"), "ocr", "--page",
                           "letter.png", "--draw", "lines.png"], cwd=tmp_path, text=True,
                          env={**os.environ, "I2TT_SERVER": triton.grpc_url},
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert rows_of(done.stdout)[0] == "letter.png"
    assert len(rows_of(done.stdout)) == 1 + len(page.boxes)
    assert Image.open(tmp_path / "lines.png").size == page.image.size
