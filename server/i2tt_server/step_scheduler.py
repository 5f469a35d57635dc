"""Iteration-level batching over a ``runners.inflight.SteppedGenerator``, without Triton.

One background thread owns every model call. Between decoding steps it admits the items
that arrived (up to ``max_running`` live sequences, one ``encode`` for the lot), drops the
sequences whose caller has gone, runs ONE ``step`` over the live sequences of one group
(groups take turns, so none starves) and answers the sequences that ended at once. A
request that arrives while others are generating therefore joins them at the next step
instead of waiting for the whole batch, and a short answer does not wait for a long one.

Failures stay with what caused them: an item whose encode fails fails alone, a step that
raises fails the sequences in that step, and the loop goes on serving the others.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
import traceback
from typing import Any, Callable, Hashable, Protocol, Sequence

log = logging.getLogger("i2tt_server")


class CallerGone(Exception):
    """The caller left (cancelled, deadline passed) before its answer was made."""

    def __init__(self, message: str = "caller gone: the request was dropped before it ended"):
        super().__init__(message)


class SchedulerStopped(RuntimeError):
    """The scheduler was closed before this item was answered."""

    def __init__(self, message: str = "scheduler stopped before the item was answered"):
        super().__init__(message)


class SchedulerObserver(Protocol):
    """What the scheduler's loop does, told as it happens (for metrics such as running
    sequences, steps per second). Every hook is optional: the scheduler calls only those
    an observer has, and an observer that raises is logged, never fatal to the loop.

    Live sequences = admitted - finished - dropped at any moment between hooks."""

    def admitted(self, n: int) -> None:
        """``n`` items were encoded and joined the live sequences."""

    def queued(self, seconds: list[float]) -> None:
        """Items left the pending queue for their encode, after waiting ``seconds`` each."""

    def step(self, running: int, seconds: float) -> None:
        """One step advanced ``running`` live sequences (one group) in ``seconds``."""

    def finished(self, n: int) -> None:
        """``n`` sequences ended and their answers were set."""

    def dropped(self, n: int) -> None:
        """``n`` live sequences left without an answer: their caller had gone, their
        step or finish raised, or the scheduler stopped."""


@dataclasses.dataclass(eq=False)
class _Entry:
    """One submitted item on its way: pending until encoded, then live with its state."""

    item: Any
    confidence: bool
    gone: Callable[[], bool] | None
    future: concurrent.futures.Future
    # When it arrived, for a time-in-queue metric (admitted(n) alone cannot give it).
    submitted: float = dataclasses.field(default_factory=time.monotonic)
    state: Any = None

    def caller_gone(self) -> bool:
        # A future cancelled by its caller counts as gone too, at any point.
        if self.future.cancelled():
            return True
        if self.gone is None:
            return False
        try:
            return bool(self.gone())
        except Exception:  # a broken check must not keep a sequence running for nobody
            log.warning("step scheduler: gone() raised; dropping: %s", traceback.format_exc())
            return True


def _set_once(future: concurrent.futures.Future, result: Any = None,
            error: BaseException | None = None) -> None:
    """Set a future once; one the caller cancelled (or close already failed) stays so."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class StepScheduler:
    """Runs ``generator`` one step at a time over every live request in one thread;
    ``submit`` from any thread. Close it (or use it as a context manager) to stop."""

    def __init__(self, generator, max_running: int = 32,
                 observer: SchedulerObserver | None = None, name: str = "step-scheduler"):
        if max_running < 1:
            raise ValueError(f"max_running must be at least 1, not {max_running}")
        self.generator = generator
        self.max_running = max_running
        self.observer = observer
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._pending: collections.deque[_Entry] = collections.deque()
        self._running: list[_Entry] = []  # the loop thread's alone, but for close's snapshot
        self._turns: list[Hashable] = []  # the live groups, next first, stepped last last
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    # -- callers' side --------------------------------------------------------------------
    def submit(self, item: Any, confidence: bool = False,
               gone: Callable[[], bool] | None = None) -> concurrent.futures.Future:
        """A future of ``finish``'s output values for ``item``; it fails with the
        encode's or step's exception, ``CallerGone`` once ``gone()`` is True, or
        ``SchedulerStopped`` after ``close``."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._work:
            if self._closed:
                _set_once(future, error=SchedulerStopped("scheduler stopped: not admitting"))
                return future
            self._pending.append(_Entry(item, confidence, gone, future))
            self._work.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop admitting, fail what is pending and running with ``SchedulerStopped`` and
        wait up to ``timeout`` seconds for the thread (a step in flight ends first)."""
        self._close_pending(SchedulerStopped())
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            # A step still in flight holds the thread: answer its callers now rather than
            # after it; the thread drops the states once the step returns.
            for entry in list(self._running):
                _set_once(entry.future, error=SchedulerStopped())

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Block until fewer than ``max_running`` items are pending or live, or it closed
        (False if ``timeout`` passed first): the excess stays in the server's own queue."""
        with self._work:
            return self._work.wait_for(lambda: self._closed or sum(self.load) < self.max_running,
                                       timeout)

    @property
    def load(self) -> tuple[int, int]:
        """(pending, live) items: a snapshot (``_work`` is reentrant)."""
        with self._work:
            return len(self._pending), len(self._running)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> StepScheduler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the loop -------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while self._wait_for_work():
                self._iterate()
        except BaseException as exc:  # a bug in the loop: no caller may wait forever
            log.error("step scheduler: loop failed: %s", traceback.format_exc())
            self._stop(SchedulerStopped(f"scheduler stopped: its loop failed: {exc}"))
            raise
        self._stop(SchedulerStopped())

    def _wait_for_work(self) -> bool:
        """Sleep until there is something to do; False once closed."""
        with self._work:
            while not self._closed and not self._pending and not self._running:
                self._work.wait()
            return not self._closed

    def _iterate(self) -> None:
        self._admit(self._take_pending())
        self._drop_gone()
        if self._running:  # None is a group like any other (Runner.group_key's default)
            group, self._turns = next_group(self._turns, self._running)
            self._step([e for e in self._running if e.state.group == group])

    def _stop(self, error: BaseException) -> None:
        """Fail and release everything left (the thread is ending)."""
        self._close_pending(error)
        running, self._running = self._running, []
        self._release(running, error)

    def _close_pending(self, error: BaseException) -> None:
        """Admit no more and fail what is pending (never encoded: nothing to release)."""
        with self._work:
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            self._work.notify_all()
        for entry in pending:
            _set_once(entry.future, error=error)

    # -- admitting ------------------------------------------------------------------------
    def _take_pending(self) -> list[_Entry]:
        """Pending entries up to the free places, skipping (and failing) those whose caller
        already left, so they cost no encode."""
        taken, gone = [], []
        with self._work:
            while self._pending and len(self._running) + len(taken) < self.max_running:
                entry = self._pending.popleft()
                (gone if entry.caller_gone() else taken).append(entry)
        for entry in gone:
            _set_once(entry.future, error=CallerGone("caller gone before the item was admitted"))
        if taken:
            now = time.monotonic()
            notify(self.observer, "queued", [now - e.submitted for e in taken])
        return taken

    def _admit(self, entries: list[_Entry]) -> None:
        """Encode the entries (one call per CONFIDENCE value, which encode takes for the
        whole call) and add them to the live sequences."""
        if not entries:
            return
        admitted = encode_all(self.generator, entries)
        with self._work:
            self._running = self._running + admitted
        if admitted:
            notify(self.observer, "admitted", len(admitted))
            # one that ended with its prompt (BLIP chooses its first token there): answered
            self._finish_ended(admitted)

    # -- stepping -------------------------------------------------------------------------
    def _drop_gone(self) -> None:
        gone = [e for e in self._running if e.caller_gone()]
        if gone:
            self._remove(gone)
            self._release(gone, CallerGone())

    def _remove(self, entries) -> None:
        """Take ``entries`` out of the live sequences (the loop thread's list)."""
        out = set(entries)
        with self._work:
            self._running = [e for e in self._running if e not in out]
            self._work.notify_all()  # room for wait_for_room's callers

    def _step(self, entries: list[_Entry]) -> None:
        started = time.perf_counter()
        try:
            self.generator.step([e.state for e in entries])
        except Exception as exc:
            log.error("step scheduler: step failed: %s", traceback.format_exc())
            self._remove(entries)
            self._release(entries, exc)
            return
        notify(self.observer, "step", len(entries), time.perf_counter() - started)
        self._finish_ended(entries)

    def _finish_ended(self, entries: list[_Entry]) -> None:
        ended, failed, answered = [], [], 0
        for entry in entries:
            try:
                if self.generator.ended(entry.state):
                    ended.append(entry)
            except Exception as exc:
                failed.append((entry, exc))
        for entry in ended:
            try:
                result = self.generator.finish(entry.state)
            except Exception as exc:
                log.error("step scheduler: finish failed: %s", traceback.format_exc())
                failed.append((entry, exc))
                continue
            _set_once(entry.future, result)
            answered += 1
        self._remove(ended + [entry for entry, _ in failed])
        if answered:
            notify(self.observer, "finished", answered)
        for entry, error in failed:
            self._release([entry], error)

    def _release(self, entries: Sequence[_Entry], error: BaseException) -> None:
        """Drop live entries' states (whatever they hold) and fail their futures."""
        for entry in entries:
            try:
                self.generator.drop(entry.state)
            except Exception:  # the caller's answer matters more than the cleanup
                log.warning("step scheduler: drop failed: %s", traceback.format_exc())
            _set_once(entry.future, error=error)
        if entries:
            notify(self.observer, "dropped", len(entries))


def encode_all(generator, entries: list[_Entry]) -> list[_Entry]:
    """``encode_each`` for the entries that want CONFIDENCE and for the others (encode
    takes one value for the whole call)."""
    return [entry for confidence in (False, True)
            for entry in encode_each(generator, [e for e in entries if e.confidence == confidence],
                                     confidence)]


def encode_each(generator, entries: list[_Entry], confidence: bool) -> list[_Entry]:
    """The entries that encoded, their states set: one call for all, and if it raises,
    each item alone, so only the ones that fail get their error."""
    if not entries:
        return []
    try:
        states = generator.encode([e.item for e in entries], confidence)
        if len(states) != len(entries):
            raise RuntimeError(f"encode made {len(states)} states for {len(entries)} items")
    except Exception as exc:
        if len(entries) == 1:
            log.error("step scheduler: encode failed: %s", traceback.format_exc())
            _set_once(entries[0].future, error=exc)
            return []
        return [ok for e in entries for ok in encode_each(generator, [e], confidence)]
    for entry, state in zip(entries, states):
        entry.state = state
    return list(entries)


def next_group(turns: list[Hashable], running: Sequence[_Entry]) -> tuple[Hashable, list]:
    """(the live group whose turn it is, the turns after it). ``turns`` lists the live
    groups, next first and the one stepped last at the back; a new group queues before
    that one, so each group waits at most one step per other live group. ``running``
    must not be empty; None is a group like any other (``Runner.group_key``'s default)."""
    live = [e.state.group for e in running]  # admission order: the earliest group first
    stepped_last = turns[-1] if turns else None
    kept = [g for g in turns if g in live]
    new = []
    for group in live:
        if group not in kept and group not in new:
            new.append(group)
    if kept and kept[-1] == stepped_last:
        kept[-1:-1] = new
    else:
        kept += new
    return kept[0], kept[1:] + kept[:1]


def notify(observer, hook: str, *args) -> None:
    """Tell the observer, if it has this hook; metrics must never stop the serving."""
    method = getattr(observer, hook, None)
    if method is None:
        return
    try:
        method(*args)
    except Exception:
        log.warning("step scheduler: observer %s failed: %s", hook, traceback.format_exc())
