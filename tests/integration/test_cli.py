"""The ``i2tt`` command line against a real tritonserver on tiny weights.

Most commands run in-process through ``main(argv)`` (fast); the README's commands run as
the installed console script.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2tt_client.cli import main
from i2tt_server.launcher import free_port
from triton_calls import TEXTS, requests_seen, same_confidence

I2TT = Path(sys.executable).parent / "i2tt"


@pytest.fixture(scope="module")
def photos(tmp_path_factory, seed_images) -> Path:
    """A folder as a user has it: images in subfolders, and a file that is not an image."""
    root = tmp_path_factory.mktemp("photos")
    (root / "a").mkdir()
    (root / "b" / "c").mkdir(parents=True)
    (root / "a" / "example1.jpg").write_bytes(seed_images["example1.jpg"])
    (root / "b" / "example2.png").write_bytes(seed_images["example2.png"])
    (root / "b" / "c" / "human1.png").write_bytes(seed_images["human1.png"])
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def server(triton, monkeypatch) -> str:
    monkeypatch.setenv("I2TT_SERVER", triton.grpc_url)
    return triton.grpc_url


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_caption_folder_as_text(server, triton, photos, reference, capsys):
    code, out, _ = run(capsys, "caption", str(photos))
    assert code == 0
    blocks = out.strip().split("\n")
    expected = [("a/example1.jpg", "example1.jpg"), ("b/c/human1.png", "human1.png"),
                ("b/example2.png", "example2.png")]  # sorted paths, notes.txt skipped
    assert blocks[0::3] == [str(photos / rel) for rel, _ in expected]
    assert blocks[1::3] == ["  caption: " + reference["blip_caption"][name]["CAPTION"]
                            for _, name in expected]
    assert [b.startswith("  confidence: ") for b in blocks[2::3]] == [True] * 3
    assert [float(b.split(": ")[1]) for b in blocks[2::3]] == [
        same_confidence(reference["blip_caption"][name], "blip_caption", triton.device, abs=5e-4)
        for _, name in expected]


def test_describe_output_jsonl_errors_and_resume(server, triton, photos, tmp_path, reference,
                                                 seed_images, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg " + str(tmp_path).encode())  # unique: never a cache hit
    output = tmp_path / "rows.jsonl"
    code, out, err = run(capsys, "describe", str(photos / "a"), str(bad), "--output", str(output))
    assert code == 1 and out == ""
    assert "2/2" in err  # the progress bar
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["input"] for r in rows] == [str(photos / "a" / "example1.jpg"), str(bad)]
    assert rows[0]["caption"] == reference["caption_tags"]["example1.jpg"]["CAPTION"]
    assert rows[0]["tags"] == reference["caption_tags"]["example1.jpg"]["TAGS"]
    assert rows[0]["error"] is None
    assert rows[1]["error"].startswith("InvalidInputError:") and "decodable" in rows[1]["error"]

    # Resume over more inputs, the bad file now fixed: only the new and the failed inputs
    # reach the server; the good row is kept as it was.
    bad.write_bytes(seed_images["human1.png"])
    before = requests_seen(triton, "caption_tags")
    code, _, _ = run(capsys, "describe", str(photos / "a"), str(bad), str(photos / "b" / "c"),
                     "--output", str(output), "--resume", "--no-progress")
    assert code == 0
    assert requests_seen(triton, "caption_tags") - before == 2
    resumed = [json.loads(line) for line in output.read_text().splitlines()]
    assert resumed[0] == rows[0]
    assert [r["input"] for r in resumed] == [rows[0]["input"], str(bad),
                                             str(photos / "b" / "c" / "human1.png")]
    assert resumed[1]["caption"] == resumed[2]["caption"] and resumed[1]["error"] is None

    # Nothing left to do: a second resume sends nothing.
    before = requests_seen(triton, "caption_tags")
    assert run(capsys, "describe", str(photos / "a"), "--output", str(output), "--resume")[0] == 0
    assert requests_seen(triton, "caption_tags") == before
    assert [json.loads(line) for line in output.read_text().splitlines()] == resumed


def test_csv_output_and_resume(server, triton, photos, tmp_path, reference, capsys):
    output = tmp_path / "ocr.csv"
    image = str(photos / "b" / "example2.png")
    assert run(capsys, "ocr", image, str(tmp_path / "missing.png"), "-o", str(output))[0] == 1
    rows = list(csv.DictReader(output.open(newline="")))
    assert [r["input"] for r in rows] == [image, str(tmp_path / "missing.png")]
    assert rows[0]["text"] == reference["trocr_ocr"]["example2.png"]["TEXT"] and not rows[0]["error"]
    assert float(rows[0]["confidence"]) == same_confidence(
        reference["trocr_ocr"]["example2.png"], "trocr_ocr", triton.device)
    assert "no such file" in rows[1]["error"] and rows[1]["confidence"] == ""
    before = requests_seen(triton, "trocr_ocr")
    assert run(capsys, "ocr", image, "-o", str(output), "--resume")[0] == 0
    assert requests_seen(triton, "trocr_ocr") == before
    assert list(csv.DictReader(output.open(newline="")))[0] == rows[0]


def test_json_format_urls_and_stdin(server, triton, image_http, photos, reference, monkeypatch,
                                    capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{photos / 'b' / 'example2.png'}\n\n"))
    code, out, _ = run(capsys, "caption", "-", "--url", image_http + "human1.png",
                       "--format", "json")
    assert code == 0
    want = {name: reference["blip_caption"][name] for name in ("example2.png", "human1.png")}
    assert json.loads(out) == [
        {"input": str(photos / "b" / "example2.png"), "error": None,
         "caption": want["example2.png"]["CAPTION"],
         "confidence": same_confidence(want["example2.png"], "blip_caption", triton.device)},
        {"input": image_http + "human1.png", "error": None,
         "caption": want["human1.png"]["CAPTION"],
         "confidence": same_confidence(want["human1.png"], "blip_caption", triton.device)}]


def test_tags_from_arguments_and_stdin(server, reference, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(TEXTS[1] + "\n"))
    code, out, _ = run(capsys, "tags", TEXTS[0], "-", "--format", "jsonl")
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"input": t, "tags": reference["t5_tags"][t]["TAGS"], "error": None} for t in TEXTS]


def test_ground_draw_writes_pngs_of_the_input_size(server, triton, photos, tmp_path, reference,
                                                    capsys):
    image = photos / "b" / "c" / "human1.png"
    out_png = tmp_path / "boxes.png"
    code, out, _ = run(capsys, "ground", str(image), "--draw", str(out_png), "--format", "jsonl")
    assert code == 0
    row = json.loads(out)
    assert row["caption"] == reference["kosmos2_caption"]["human1.png"]["CAPTION"]
    assert row["entities"] == reference["kosmos2_caption"]["human1.png"]["ENTITIES"]
    assert row["confidence"] == same_confidence(reference["kosmos2_caption"]["human1.png"],
                                                "kosmos2_caption", triton.device)
    with Image.open(out_png) as drawn:
        assert drawn.format == "PNG"
        assert drawn.size == Image.open(image).size

    folder = tmp_path / "drawn"
    code, _, _ = run(capsys, "ground", str(photos / "a"), str(image), "--draw", str(folder),
                     "--format", "jsonl")
    assert code == 0
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == ["00000-example1.png", "00001-human1.png"]
    assert Image.open(pngs[0]).size == Image.open(photos / "a" / "example1.jpg").size


def test_timeout_and_header_options(server, tmp_path, capsys):
    # A fresh image: the server's response cache would answer a known one at once.
    fresh = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng().integers(0, 255, (32, 32, 3), np.uint8)).save(fresh)
    code, out, _ = run(capsys, "caption", str(fresh), "--timeout", "0.001",
                       "--header", "authorization=Bearer x", "--format", "jsonl")
    assert code == 1
    assert json.loads(out)["error"].startswith("DeadlineExceededError")
    with pytest.raises(SystemExit):
        main(["caption", str(fresh), "--header", "no-equals-sign"])


def test_health(server, triton, capsys):
    code, out, _ = run(capsys, "health")
    assert code == 0
    assert "live     yes" in out and "version  2." in out
    assert "caption_tags     ready" in out
    code, out, _ = run(capsys, "health", "--format", "json", "--model", "t5_tags")
    assert code == 0
    health = json.loads(out)
    assert health["ok"] and health["models"] == [{"name": "t5_tags", "ready": True}]
    code, out, _ = run(capsys, "--server", f"127.0.0.1:{free_port()}", "health", "--retries", "0")
    assert code == 1 and "live     no" in out


def test_readme_commands(triton, seed_images, tmp_path):
    """The commands the README shows, run as a user runs them (console script, env var)."""
    env = {**os.environ, "I2TT_SERVER": triton.grpc_url}
    (tmp_path / "photos").mkdir()
    for name, data in seed_images.items():
        (tmp_path / "photos" / name).write_bytes(data)
    shutil.copy(tmp_path / "photos" / "example1.jpg", tmp_path / "photo.jpg")

    def sh(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(I2TT), *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    assert "ready" in sh("health").stdout
    assert sh("caption", "photo.jpg").stdout.startswith("photo.jpg\n  caption: ")
    sh("ground", "photo.jpg", "--draw", "boxes.png")
    assert Image.open(tmp_path / "boxes.png").size == Image.open(tmp_path / "photo.jpg").size
    sh("describe", "photos/", "--output", "photos.jsonl")
    sh("describe", "photos/", "--output", "photos.jsonl", "--resume")
    assert len((tmp_path / "photos.jsonl").read_text().splitlines()) == 3
    assert json.loads(sh("tags", "a dog running on a beach", "--format", "json").stdout)[0]["tags"] \
        is not None


class Drip:
    """A loopback HTTP server that answers every GET with an image's headers and then one
    byte of it a second, for as long as the client stays (``dripping`` while it does)."""

    def __init__(self, data: bytes):
        import http.server
        import threading

        self.dripping = threading.Event()
        drip = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                drip.dripping.set()
                try:
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:
                    pass  # the client gave up
                finally:
                    drip.dripping.clear()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/photo.jpg"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_slow_drip_url_ends_at_its_deadline_and_other_rows_are_written(
        triton, photos, seed_images, reference):
    drip = Drip(seed_images["example1.jpg"])
    command = [str(I2TT), "--server", triton.grpc_url, "caption",
               str(photos / "a" / "example1.jpg"), drip.url, str(photos / "b" / "example2.png"),
               "--url-timeout", "6", "--format", "jsonl"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(process.stdout.readline())
        # The row before the stuck URL is out while that URL is still dripping.
        assert drip.dripping.is_set(), "the first row waited for the slow URL"
        assert first["caption"] == reference["blip_caption"]["example1.jpg"]["CAPTION"]
        rest, _ = process.communicate(timeout=120)
    finally:
        process.kill()
        drip.close()
    rows = [first] + [json.loads(line) for line in rest.splitlines()]
    assert process.returncode == 1
    assert [r["input"] for r in rows] == command[4:7]
    assert "timed out" in rows[1]["error"] and "within 6s" in rows[1]["error"]
    assert rows[2]["caption"] == reference["blip_caption"]["example2.png"]["CAPTION"]


def test_symlink_loops_and_unreadable_entries_get_their_own_rows(server, seed_images,
                                                                  tmp_path, reference, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "good.jpg").write_bytes(seed_images["example1.jpg"])
    (tmp_path / "sub" / "up").symlink_to("..")        # a folder loop
    (tmp_path / "self.png").symlink_to("self.png")    # a link to itself
    (tmp_path / "gone.jpg").symlink_to("nowhere.jpg")  # a dangling link
    os.mkfifo(tmp_path / "pipe.png")                   # would block a reader for ever
    code, out, _ = run(capsys, "caption", str(tmp_path), "--format", "jsonl")
    rows = {Path(r["input"]).relative_to(tmp_path).as_posix(): r
            for r in map(json.loads, out.splitlines())}
    assert code == 1
    assert set(rows) == {"good.jpg", "gone.jpg", "pipe.png", "self.png", "sub/up"}
    assert rows["good.jpg"]["caption"] == reference["blip_caption"]["example1.jpg"]["CAPTION"]
    assert "symlink loop" in rows["sub/up"]["error"]
    assert "symlink loop" in rows["self.png"]["error"]
    assert "dangling symlink" in rows["gone.jpg"]["error"]
    assert "not a regular file" in rows["pipe.png"]["error"]
