"""Locust load test for I2TT over Triton's gRPC API.

Run it through ``scripts/load.py`` (which can start a server, writes reports and applies the
thresholds), or directly::

    locust -f tests/load/locustfile.py --headless -H grpc://127.0.0.1:8001 \\
        -u 8 -t 60s --step-users 2 --step-seconds 10 --task-set mix --p95-ms 5000

Every call is reported to locust's statistics as request type "grpc" named after the model,
and counts as failed when Triton returns an error or the response misses what the wire
contract promises (a non-empty CAPTION, a TAGS row, JSON ENTITIES ...).

Images come from the seed images plus variants made here at start-up (resized, flipped,
re-encoded), so that Triton's response cache cannot answer the whole run from memory.
This file needs only the client side (locust, tritonclient, numpy, pillow), never torch.
"""

from __future__ import annotations

# grpcio must be switched to gevent before any channel exists, or its blocking calls stall
# the whole locust process (every user shares one OS thread).
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import locust.stats  # noqa: E402
import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from locust import LoadTestShape, User, between, events, task  # noqa: E402
from locust.runners import WorkerRunner  # noqa: E402
from PIL import Image, ImageDraw, ImageFont, ImageOps  # noqa: E402

logger = logging.getLogger("i2tt.load")

ROOT = Path(__file__).resolve().parents[2]
SEED_NAMES = ("example1.jpg", "example2.png", "human1.png")

# Share of each call in "mix", our guess at real traffic: most callers want caption + tags in
# one round trip, some only a caption, a few tag their own text; grounding and OCR are rarer.
MIX_WEIGHTS = {
    "caption_tags": 6,
    "blip_caption": 3,
    "t5_tags": 2,
    "kosmos2_caption": 1,
    "trocr_ocr": 1,
}
MODELS = tuple(MIX_WEIGHTS)
# "all" sends every model in turn; user k starts at model k, so a run with as many users as
# models touches every model at once (the smoke test relies on it).
TASK_SETS = ("mix", "all", *MODELS)

BLIP_PROMPTS = ("a photography of", "a picture of")
CAPTION_WORDS = ("man woman dog cat bird car street table wooden blocks robot head "
                 "circuit building city field tree sky water book sign road house").split()
CAPTION_TEMPLATES = (
    "a {0} sitting on a {1}",
    "a photography of a {0} next to a {1}",
    "two {0}s and a {1} in the background",
    "a close up view of a {0} with a {1}",
    "a {0} standing in front of a {1} at night",
)


# ---------------------------------------------------------------- command-line options

@events.init_command_line_parser.add_listener
def add_options(parser):
    # Plain parser.add_argument: locust's include_in_web_ui does not work inside groups.
    parser.add_argument("--task-set", choices=TASK_SETS, default="mix", include_in_web_ui=True,
                       help="which calls to send: 'mix' (weighted like real traffic), "
                            "'all' (every model in turn) or one model (default: mix)")
    parser.add_argument("--p95-ms", type=float, default=0.0, include_in_web_ui=True,
                       help="fail the run when any model's p95 latency exceeds this many "
                            "milliseconds; 0 turns the bound off (default: 0)")
    parser.add_argument("--step-users", type=int, default=0, include_in_web_ui=True,
                       help="users added at each step, up to --users; 0 starts them all at "
                            "once (default: 0)")
    parser.add_argument("--step-seconds", type=float, default=10.0, include_in_web_ui=True,
                       help="seconds between steps (default: 10)")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                       help="seconds before one gRPC call counts as failed (default: 120)")


# ---------------------------------------------------------------- payloads

def seed_image_dir() -> Path | None:
    candidates = [os.environ.get("I2TT_SEED_IMAGES"), ROOT.parent / "shared" / "seed_images",
                  ROOT / "shared" / "seed_images"]
    for candidate in candidates:
        if candidate and all((Path(candidate) / n).is_file() for n in SEED_NAMES):
            return Path(candidate)
    return None


def synthetic_seeds() -> list[Image.Image]:
    """Stand-ins when the seed images are not around (a clone without shared/)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
            for _ in range(3)]


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options = {"JPEG": {"quality": 85}, "WEBP": {"quality": 80}}.get(fmt, {})
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def make_images() -> list[bytes]:
    """The seed images as they are, plus resized / flipped / re-encoded variants: distinct
    bytes (so distinct cache keys) at the sizes and formats callers really send."""
    folder = seed_image_dir()
    if folder:
        originals = [(folder / n).read_bytes() for n in SEED_NAMES]
        seeds = [Image.open(io.BytesIO(data)).convert("RGB") for data in originals]
    else:
        logger.warning("seed images not found (set I2TT_SEED_IMAGES); using synthetic images")
        seeds = synthetic_seeds()
        originals = [encode(s, "PNG") for s in seeds]
    images = list(originals)
    formats = itertools.cycle(("JPEG", "WEBP", "PNG"))
    for seed in seeds:
        for width in (224, 320, 384, 480, 640):
            height = max(1, round(seed.height * width / seed.width))
            resized = seed.resize((width, height), Image.Resampling.BILINEAR)
            for variant in (resized, ImageOps.mirror(resized), ImageOps.grayscale(resized)):
                images.append(encode(variant, next(formats)))
    return images


def make_text_lines(count: int = 40) -> list[bytes]:
    """Single lines of printed text, what TrOCR is made to read."""
    rng = random.Random(1)
    font = ImageFont.load_default(size=28)
    lines = []
    for _ in range(count):
        text = " ".join(rng.choice(CAPTION_WORDS) for _ in range(rng.randint(2, 5)))
        width = int(font.getlength(text)) + 24
        image = Image.new("RGB", (width, 48), "white")
        ImageDraw.Draw(image).text((12, 8), text, fill="black", font=font)
        lines.append(encode(image, "PNG"))
    return lines


def make_captions(count: int = 60) -> list[bytes]:
    rng = random.Random(2)
    return [rng.choice(CAPTION_TEMPLATES).format(*rng.sample(CAPTION_WORDS, 2)).encode()
            for _ in range(count)]


# Built once per process at import, before any user starts, so the cost is not measured.
IMAGES = make_images()
TEXT_LINES = make_text_lines()
CAPTIONS = make_captions()


# ---------------------------------------------------------------- responses

class BadResponse(Exception):
    """The server answered, but not what the wire contract promises."""


def text_input(name: str, value: bytes) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.object_))
    return tensor


def output(result, name: str) -> np.ndarray:
    array = result.as_numpy(name)
    if array is None:
        raise BadResponse(f"missing output {name}")
    if array.ndim != 2 or array.shape[0] != 1 or array.shape[1] < 1:
        raise BadResponse(f"{name} has shape {array.shape}, expected [1, k]")
    return array


def nonempty_text(result, name: str) -> str:
    text = output(result, name)[0, 0].decode("utf-8", errors="replace")
    if not text.strip():
        raise BadResponse(f"empty {name}")
    return text


def check_caption(result) -> None:
    nonempty_text(result, "CAPTION")


def check_tags(result) -> None:
    # Random test weights may generate no tag at all, so only the row itself is required.
    tags = output(result, "TAGS")
    if not all(isinstance(t, bytes) for t in tags[0]):
        raise BadResponse("TAGS holds non-bytes values")


def check_caption_tags(result) -> None:
    check_caption(result)
    check_tags(result)


def check_kosmos(result) -> None:
    check_caption(result)
    raw = output(result, "ENTITIES")[0, 0]
    try:
        entities = json.loads(raw)
    except ValueError:
        raise BadResponse(f"ENTITIES is not JSON: {raw[:80]!r}") from None
    if not isinstance(entities, list):
        raise BadResponse("ENTITIES is not a JSON list")


def check_ocr(result) -> None:
    # A random TrOCR may read nothing sensible, but it must answer one TEXT per request.
    output(result, "TEXT")


# ---------------------------------------------------------------- the user

class TritonUser(User):
    """One caller with its own gRPC connection, sending one request at a time."""

    # A short think time between calls, like a service handling a stream of uploads.
    wait_time = between(0.05, 0.5)
    _instances = itertools.count()

    def __init__(self, environment):
        super().__init__(environment)
        options = environment.parsed_options
        self.task_set = getattr(options, "task_set", "mix")
        self.timeout = getattr(options, "request_timeout", 120.0)
        self.rng = random.Random()
        self.turn = next(self._instances) % len(MODELS)  # where "all" starts for this user
        self.client: grpcclient.InferenceServerClient | None = None

    def on_start(self):
        if not self.host:
            raise ValueError("no server address: pass --host grpc://HOST:PORT")
        # tritonclient wants "host:port"; accept locust-style URLs too.
        address = self.host.split("://", 1)[-1].rstrip("/")
        self.client = grpcclient.InferenceServerClient(address)

    def on_stop(self):
        # An open channel keeps grpcio's gevent poller alive and locust never exits.
        if self.client is not None:
            self.client.close()
            self.client = None

    def next_model(self) -> str:
        if self.task_set == "mix":
            return self.rng.choices(MODELS, weights=[MIX_WEIGHTS[m] for m in MODELS])[0]
        if self.task_set == "all":
            model = MODELS[self.turn]
            self.turn = (self.turn + 1) % len(MODELS)
            return model
        return self.task_set

    @task
    def call_model(self):
        getattr(self, self.next_model())()

    # One method per model: builds the request, names the check for its response.
    def caption_tags(self):
        self.infer("caption_tags", [text_input("IMAGE", self.rng.choice(IMAGES))],
                   check_caption_tags)

    def blip_caption(self):
        inputs = [text_input("IMAGE", self.rng.choice(IMAGES))]
        if self.rng.random() < 0.25:  # some callers steer the caption with a prefix
            inputs.append(text_input("PROMPT", self.rng.choice(BLIP_PROMPTS).encode()))
        self.infer("blip_caption", inputs, check_caption)

    def kosmos2_caption(self):
        self.infer("kosmos2_caption", [text_input("IMAGE", self.rng.choice(IMAGES))],
                   check_kosmos)

    def trocr_ocr(self):
        self.infer("trocr_ocr", [text_input("IMAGE", self.rng.choice(TEXT_LINES))], check_ocr)

    def t5_tags(self):
        self.infer("t5_tags", [text_input("TEXT", self.rng.choice(CAPTIONS))], check_tags)

    def infer(self, model: str, inputs, check) -> None:
        """One call, timed and reported to locust (tritonclient knows nothing of locust)."""
        start = time.perf_counter()
        exception = None
        response_length = 0
        try:
            result = self.client.infer(model, inputs, client_timeout=self.timeout)
            response_length = result.get_response().ByteSize()
            check(result)
        except Exception as error:  # errors, deadlines, contract breaks: count it, go on
            exception = error
        events.request.fire(request_type="grpc", name=model,
                            response_time=(time.perf_counter() - start) * 1000,
                            response_length=response_length, exception=exception,
                            context={}, url=self.host)


# ---------------------------------------------------------------- load shape

def step_users(elapsed: float, users: int, step: int, step_seconds: float) -> int:
    """Users running ``elapsed`` seconds into a step ramp: ``step`` more every
    ``step_seconds``, never more than ``users``; step 0 means all of them from the start."""
    if step <= 0 or step >= users:
        return users
    return min(users, step * (1 + int(elapsed // step_seconds)))


class StepLoadShape(LoadTestShape):
    """Users step up over time (--step-users every --step-seconds, up to --users) and the
    run ends after --run-time. Holding each level for a while shows where latency bends."""

    use_common_options = True  # reads --users and --run-time like a plain locust run

    def tick(self):
        options = self.runner.environment.parsed_options
        elapsed = self.get_run_time()
        if options.run_time and elapsed >= options.run_time:
            return None
        users = options.num_users or 1
        step = options.step_users
        # Spawn each step's users within about a second; a ramp inside a step blurs it.
        return step_users(elapsed, users, step, options.step_seconds), max(step, users, 1)


# ---------------------------------------------------------------- thresholds

def threshold_failures(environment) -> list[str]:
    """Reasons the run fails its thresholds; empty when it passes."""
    stats = environment.stats
    reasons = []
    if stats.total.num_requests == 0:
        reasons.append("no request completed")
    if stats.total.num_failures:
        reasons.append(f"{stats.total.num_failures} of {stats.total.num_requests} "
                       "requests failed")
    bound = getattr(environment.parsed_options, "p95_ms", 0.0)
    if bound:
        for entry in sorted(stats.entries.values(), key=lambda e: e.name):
            p95 = entry.get_response_time_percentile(0.95)
            if entry.num_requests and p95 > bound:
                reasons.append(f"{entry.name}: p95 {p95:.0f} ms > {bound:g} ms")
    return reasons


@events.quitting.add_listener
def apply_thresholds(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner):
        return  # the master holds the aggregated statistics and decides
    if getattr(environment.parsed_options, "csv_prefix", None):
        # locust rewrites the --csv stats file once a second and does not rewrite it at
        # exit, so requests that ended in the last second would be missing from it; give
        # its writer one more pass over the final statistics.
        gevent.sleep(locust.stats.CSV_STATS_INTERVAL_SEC + 0.25)
    reasons = threshold_failures(environment)
    for reason in reasons:
        logger.error("threshold failed: %s", reason)
    if reasons:
        environment.process_exit_code = 1
    elif environment.process_exit_code is None:
        logger.info("thresholds passed")
