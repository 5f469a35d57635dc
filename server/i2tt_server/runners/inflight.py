"""The contract a generative runner meets for in-flight (iteration-level) batching.

On the static path a batch is generated as a whole: one ``generate`` call per group runs
until its last row ends, and a request that arrives meanwhile waits for the next batch. A
scheduler doing iteration-level batching (``step_scheduler.StepScheduler``) instead keeps a
set of live sequences and runs ONE decoding step over all of them at a time: it adds newly
arrived requests between steps, takes out the sequences that ended (their answers go back
at once) and drops those whose caller has gone. What it needs from a runner is below;
``stepped.SteppedEncoderDecoder`` implements it for T5, TrOCR and BLIP.

The scheduler's loop, for reference::

    states = {}
    while True:
        for key, item in new_arrivals():            # admitted between steps
            states[key] = runner.encode([item])[0]  # (it may have ended already: answer it)
        if not states:
            wait_for_work(); continue
        for key in cancelled_callers():
            runner.drop(states.pop(key))
        live = list(states)
        runner.step([states[key] for key in live])  # one token for each live sequence
        for key in live:
            if runner.ended(states[key]):
                answer(key, runner.finish(states.pop(key)))

Parity matters as it does for whole batches: a sequence's answer must not depend on the
others it shared steps with (``Runner.group_key`` says which items may share a forward
pass), and CONFIDENCE is kept only for sequences whose request asked for it.
"""

from __future__ import annotations

from typing import Any, Hashable, Protocol, Sequence


class SequenceState(Protocol):
    """One live sequence between steps: what the runner keeps for it (its prompt or
    encoder output, the tokens so far, its cache of keys and values, its scores when
    CONFIDENCE was asked). Opaque to the scheduler but for these two facts."""

    group: Hashable  # the item's Runner.group_key: only equal groups share a step
    new_tokens: int  # tokens generated so far (the i2tt_generated_tokens_total metric)


class SteppedGenerator(Protocol):
    """Iteration-level generation, one decoding step at a time over any live sequences."""

    def encode(self, items: Sequence[Any], confidence: bool = False) -> list[SequenceState]:
        """Parsed items (as ``Runner.parse`` makes them) -> one new state each, ready for
        their first step: images through the vision encoder, prompts tokenised (or read,
        with their first token chosen, where generate reads the prompt first: a state
        may then have ended already). With ``confidence`` the states keep each step's
        score of the chosen token."""
        ...

    def step(self, states: Sequence[SequenceState]) -> list[int]:
        """Advance every given (live, same-group) state by one token, in place; the token
        each one chose, in order. Beam search advances a state's beams together."""
        ...

    def ended(self, state: SequenceState) -> bool:
        """Whether the sequence is done: it chose its end token or reached
        ``max_new_tokens``. An ended state takes no more steps."""
        ...

    def finish(self, state: SequenceState) -> dict[str, Any]:
        """An ended state's output values, exactly as ``Runner.infer`` answers that item
        (decoded, cleaned up, CONFIDENCE when asked); the state is spent."""
        ...

    def drop(self, state: SequenceState) -> None:
        """Forget a state whose caller has gone (cancelled, deadline passed) before it
        ended: release what it holds (its key-value cache); no answer is made."""
        ...
