"""The step scheduler answers each request as plain ``generate`` does on its text alone,
whoever submits it and whenever; joining, leaving and failing requests cost the others
nothing. Orders are checked by the steps counted through the observer, never by time."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from i2tt_server.runners.stepped_t5 import SteppedT5
from i2tt_server.step_scheduler import CallerGone, SchedulerStopped, StepScheduler
from i2tt_server.text import clean_tags
from test_stepped_t5 import END_BOOST, MAX_NEW_TOKENS, TEXTS, reference, tagger

WAIT = 60  # seconds a test waits for a future before it counts as hung


class Recorder:
    """Observer that counts steps and live sequences; ``at_step`` maps a step count to a
    callable run in the loop thread right after that step (to act between two steps)."""

    def __init__(self, at_step=None):
        self.lock = threading.Lock()
        self.steps = self.live = self.max_live = self.finished_n = self.dropped_n = 0
        self.admissions: list[int] = []
        self.step_sizes: list[int] = []
        self.at_step = at_step or {}

    def admitted(self, n):
        with self.lock:
            self.admissions.append(n)
            self.live += n
            self.max_live = max(self.max_live, self.live)

    def step(self, running, seconds):
        with self.lock:
            self.steps += 1
            self.step_sizes.append(running)
            steps = self.steps
        if steps in self.at_step:
            self.at_step[steps]()

    def finished(self, n):
        with self.lock:
            self.live -= n
            self.finished_n += n

    def dropped(self, n):
        with self.lock:
            self.live -= n
            self.dropped_n += n


def at_done(future, recorder: Recorder, into: dict, key) -> None:
    """Note the step count at which ``future`` completes (callbacks run in the loop)."""
    future.add_done_callback(lambda _: into.__setitem__(key, recorder.steps))


CASES = [("float32", 1), ("float32", 8), ("bfloat16", 1)]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-beams{c[1]}")
def case(request, weights_dir):
    """(generator, expected TAGS per text, tokens per text) on the "ending" weights,
    whose answers end after 1 to MAX_NEW_TOKENS tokens."""
    dtype, beams = request.param
    t5 = tagger(weights_dir, dtype, beams, END_BOOST)
    # Without early stopping every beam search runs to MAX_NEW_TOKENS steps whatever its
    # answer; with it, the steps vary too (generate reads the same config).
    t5.model.generation_config.early_stopping = True
    want = [reference(t5, text) for text in TEXTS]
    tags = [clean_tags(raw) for raw in t5.processor.batch_decode(want, skip_special_tokens=True)]
    return SteppedT5(t5), tags, [len(w) - 1 for w in want]


@pytest.fixture(scope="module")
def greedy(weights_dir):
    t5 = tagger(weights_dir, "float32", 1, END_BOOST)
    want = [reference(t5, text) for text in TEXTS]
    tags = [clean_tags(raw) for raw in t5.processor.batch_decode(want, skip_special_tokens=True)]
    return SteppedT5(t5), tags, [len(w) - 1 for w in want]


def answer(future):
    return future.result(WAIT)["TAGS"]


def test_concurrent_submitters_get_what_generate_gives_alone(case):
    generator, want, _ = case
    recorder, futures = Recorder(), {}
    with StepScheduler(generator, max_running=16, observer=recorder) as scheduler:
        def submit_every(start):
            for i in range(start, len(TEXTS), 8):
                futures[i] = scheduler.submit(TEXTS[i])
        threads = [threading.Thread(target=submit_every, args=(s,)) for s in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert {i: answer(f) for i, f in futures.items()} == dict(enumerate(want))
    assert recorder.finished_n == len(TEXTS) and recorder.dropped_n == 0
    assert recorder.max_live <= 16 and recorder.live == 0


def steps_alone(generator, text) -> int:
    recorder = Recorder()
    with StepScheduler(generator, observer=recorder) as scheduler:
        scheduler.submit(text).result(WAIT)
    return recorder.steps


def test_a_short_request_joining_mid_flight_ends_before_the_long_one(case):
    generator, want, lengths = case
    alone = [steps_alone(generator, text) for text in TEXTS[:12]]
    long_i, short_i = alone.index(max(alone)), alone.index(min(alone))
    long_steps, short_steps = alone[long_i], alone[short_i]
    join_at = 2
    assert join_at + short_steps < long_steps, "the texts must differ enough in length"
    done, futures = {}, {}

    def join():
        futures["short"] = scheduler.submit(TEXTS[short_i])
        at_done(futures["short"], recorder, done, "short")

    recorder = Recorder({join_at: join})
    with StepScheduler(generator, observer=recorder) as scheduler:
        futures["long"] = scheduler.submit(TEXTS[long_i])
        at_done(futures["long"], recorder, done, "long")
        assert answer(futures["long"]) == want[long_i]
        assert answer(futures["short"]) == want[short_i]
    # The short one joined at the next step and took as many steps as alone; the long
    # one did not wait for it, nor it for the long one.
    assert done == {"short": join_at + short_steps, "long": long_steps}
    assert recorder.step_sizes[join_at - 1:join_at + 1] == [1, 2]


def test_a_caller_gone_mid_generation_fails_within_one_step(case):
    generator, want, lengths = case
    chosen = [i for i in range(len(TEXTS)) if lengths[i] == MAX_NEW_TOKENS][:4]
    leaving, gone_at = chosen[0], 3  # submitted first: surely live by step gone_at
    left = threading.Event()
    failed_at = {}
    recorder = Recorder({gone_at: left.set})
    with StepScheduler(generator, max_running=8, observer=recorder) as scheduler:
        futures = {i: scheduler.submit(TEXTS[i], gone=left.is_set if i == leaving else None)
                   for i in chosen}
        at_done(futures[leaving], recorder, failed_at, "leaving")
        with pytest.raises(CallerGone, match="caller gone"):
            futures[leaving].result(WAIT)
        assert {i: answer(futures[i]) for i in chosen if i != leaving} == \
            {i: want[i] for i in chosen if i != leaving}
    # gone() turned True right after step gone_at: dropped before step gone_at + 1
    assert failed_at["leaving"] == gone_at
    assert recorder.dropped_n == 1 and recorder.finished_n == len(chosen) - 1


def test_max_running_is_never_exceeded_and_pending_items_wait(greedy):
    generator, want, _ = greedy
    recorder = Recorder()
    with StepScheduler(generator, max_running=3, observer=recorder) as scheduler:
        futures = [scheduler.submit(text) for text in TEXTS[:10]]
        assert [answer(f) for f in futures] == want[:10]
    assert recorder.max_live == 3 and max(recorder.step_sizes) == 3
    assert sum(recorder.admissions) == 10 and len(recorder.admissions) >= 4  # in turns


class Wrapped:
    """SteppedT5 with items ``(group, text)``: the group (set on each state) decides which
    states share a step; encode raises for ``bad_item``, and step raises once it is
    given a state of ``bad_group``."""

    def __init__(self, inner: SteppedT5, bad_item="no such item", bad_group="no such group"):
        self.inner, self.bad_item, self.bad_group = inner, bad_item, bad_group
        self.encode_calls: list[int] = []
        self.stepped_groups: list = []

    def encode(self, items, confidence=False):
        self.encode_calls.append(len(items))
        if self.bad_item in items:
            raise ValueError("cannot encode this item")
        states = self.inner.encode([text for _, text in items], confidence)
        for (group, _), state in zip(items, states):
            state.group = group
        return states

    def step(self, states):
        self.stepped_groups.append(states[0].group)
        if states[0].group == self.bad_group:
            raise RuntimeError("this step exploded")
        return self.inner.step(states)

    def ended(self, state):
        return self.inner.ended(state)

    def finish(self, state):
        return self.inner.finish(state)

    def drop(self, state):
        self.inner.drop(state)


def test_an_item_whose_encode_fails_fails_alone(greedy):
    generator, want, _ = greedy
    bad = (None, "poison")
    wrapped, futures = Wrapped(generator, bad_item=bad), {}

    def arrive():  # between steps, so all four are admitted in one encode call
        futures.update({i: scheduler.submit((None, TEXTS[i])) for i in (1, 2, 3)})
        futures["bad"] = scheduler.submit(bad)

    with StepScheduler(wrapped, observer=Recorder({1: arrive})) as scheduler:
        first = scheduler.submit((None, TEXTS[0]))
        assert answer(first) == want[0]
        with pytest.raises(ValueError, match="cannot encode"):
            futures["bad"].result(WAIT)
        assert [answer(futures[i]) for i in (1, 2, 3)] == want[1:4]
    assert wrapped.encode_calls == [1, 4, 1, 1, 1, 1]  # the batch, then each alone


def test_a_step_that_raises_fails_only_its_states_and_groups_take_turns(greedy):
    generator, want, lengths = greedy
    wrapped = Wrapped(generator, bad_group="bad")
    long = [i for i in range(len(TEXTS)) if lengths[i] == MAX_NEW_TOKENS]
    bad, arrived = [], threading.Event()

    def arrive():  # between steps, so both join the same step
        bad.extend(scheduler.submit(("bad", TEXTS[i])) for i in long[4:6])
        arrived.set()

    with StepScheduler(wrapped, observer=Recorder({1: arrive})) as scheduler:
        good = {i: scheduler.submit(("a" if n % 2 else "b", TEXTS[i]))
                for n, i in enumerate(long[:4])}
        assert arrived.wait(WAIT)
        for future in bad:
            with pytest.raises(RuntimeError, match="exploded"):
                future.result(WAIT)
        assert {i: answer(f) for i, f in good.items()} == {i: want[i] for i in good}
        assert scheduler.submit(("bad2", TEXTS[0])).result(WAIT)["TAGS"] == want[0]
    assert wrapped.stepped_groups.count("bad") == 1  # its states left after one try
    # While "a" and "b" both live, neither steps twice in a row.
    ab = [g for g in wrapped.stepped_groups if g in ("a", "b")]
    assert all(x != y for x, y in zip(ab[:2 * MAX_NEW_TOKENS - 1], ab[1:2 * MAX_NEW_TOKENS]))


def test_close_fails_pending_and_running_and_the_thread_ends(greedy):
    generator, _, lengths = greedy
    long = [i for i in range(len(TEXTS)) if lengths[i] == MAX_NEW_TOKENS][:5]
    reached, proceed = threading.Event(), threading.Event()

    def hold():  # keep the loop between steps while close runs
        reached.set()
        proceed.wait(WAIT)

    recorder = Recorder({2: hold})
    scheduler = StepScheduler(generator, max_running=2, observer=recorder)
    futures = [scheduler.submit(TEXTS[i]) for i in long]
    assert reached.wait(WAIT)
    closer = threading.Thread(target=scheduler.close, args=(WAIT,))
    closer.start()
    running = futures[:recorder.live]
    pending = futures[recorder.live:]
    assert len(running) == 2 and len(pending) == 3
    for future in pending:  # failed at once, without waiting for the step in flight
        with pytest.raises(SchedulerStopped, match="scheduler stopped"):
            future.result(WAIT)
    assert not any(f.done() for f in running)
    proceed.set()
    closer.join(WAIT)
    for future in running:
        with pytest.raises(SchedulerStopped, match="scheduler stopped"):
            future.result(WAIT)
    assert not scheduler.alive and recorder.dropped_n == 2 and recorder.live == 0
    with pytest.raises(SchedulerStopped):
        scheduler.submit(TEXTS[0]).result(WAIT)


def test_a_cancelled_future_counts_as_gone(greedy):
    generator, want, lengths = greedy
    long = [i for i in range(len(TEXTS)) if lengths[i] == MAX_NEW_TOKENS][:2]
    futures = {}

    def cancel():
        futures["cancelled"].cancel()

    recorder = Recorder({2: cancel})
    with StepScheduler(generator, observer=recorder) as scheduler:
        # Submitted first, so surely live by step 2 when it is cancelled.
        futures["cancelled"] = scheduler.submit(TEXTS[long[1]])
        futures["kept"] = scheduler.submit(TEXTS[long[0]])
        assert answer(futures["kept"]) == want[long[0]]
    assert futures["cancelled"].cancelled() and recorder.dropped_n == 1
    with pytest.raises(concurrent.futures.CancelledError):
        futures["cancelled"].result(0)
