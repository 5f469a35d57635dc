"""The measured phases of one run: the in-process rows (seed-style, batched, and the BLIP
roofline), the served rows (batching on, with the cache-hit row; batching off) and the
deadline check, in the order the report gives them."""

from __future__ import annotations

import time

from . import deadlines, inprocess, roofline, served
from .console import log, print_row
from .inprocess import joined_dtypes
from .inputs import Payloads
from .plan import Plan
from .stats import Row
from .targets import REPOSITORY, caches_responses, input_of, is_ensemble, max_batch_size, steps_of

CACHE_BYTES = 256 * 1024 * 1024


class Offsets:
    """Hands out fresh payload indices, so no two measured requests share bytes."""

    def __init__(self):
        self.next = 0

    def take(self, n: int) -> int:
        start, self.next = self.next, self.next + n + 100  # +100: room for warm-ups
        return start


class Phases:
    """Runs the phases of ``plan`` on ``payloads``. ``roofline``: the BLIP vision encoder's
    row, measured with the first target that runs BLIP in-process (empty until then)."""

    def __init__(self, plan: Plan, payloads: Payloads):
        self.plan, self.options, self.payloads = plan, plan.options, payloads
        self.offsets = Offsets()
        self.roofline: dict = {}

    def payload_of(self, target: str):
        kind, _ = input_of(target)
        return lambda i: self.payloads.get(kind, i)

    # -- in-process ------------------------------------------------------------------------

    def inprocess_rows(self, target: str) -> list[Row]:
        from i2tt_server.runners import RUNNERS

        rows = self.seed_rows(target)
        plan = self.plan
        runners = [inprocess.TimedRunner(RUNNERS[step].from_parameters(
            {**plan.parameters[step], "weights_root": str(plan.weights), "warmup": "false",
             "device": plan.device})) for step in steps_of(target)]
        rows += self.batched_rows(target, runners)
        inprocess.unload_models(runners)
        return rows

    def seed_rows(self, target: str) -> list[Row]:
        import torch

        plan, options = self.plan, self.options
        steps, payload = steps_of(target), self.payload_of(target)
        # The seed notebook's way: float32 and torch's own thread count; then the same at the
        # served dtype, so the report separates what the dtype gives from what serving gives.
        served_dtypes = {step: plan.served_dtype(step) for step in steps}
        variants = [("seed", {step: "float32" for step in steps})]
        if set(served_dtypes.values()) != {"float32"}:
            variants.append(("seed-dtype", served_dtypes))
        torch.set_num_threads(plan.seed_threads)
        n = options.seed_requests if is_ensemble(target) else \
            min(options.seed_requests, options.single_requests)
        rows = []
        for row_kind, dtypes in variants:
            label = (f"seed-style in-process, {joined_dtypes(dtypes.values())}"
                     f"{' (served dtype)' if row_kind != 'seed' else ''}, "
                     f"{plan.seed_threads} thread(s), one at a time")
            models = [inprocess.SeedStyle(step, plan.weights / plan.parameters[step]["weights"],
                                          plan.parameters[step], plan.device,
                                          getattr(torch, dtypes[step])) for step in steps]
            log(f"{target}: {label}, {n} requests")
            row = inprocess.run_seed_style(target, models, payload, n, label, self.offsets.take(n))
            row.kind = row_kind
            row.extra["threads"] = plan.seed_threads
            rows.append(row)
            print_row(row)
            inprocess.unload_models(models)
        torch.set_num_threads(plan.served_threads)
        return rows

    def batched_rows(self, target: str, runners: list[inprocess.TimedRunner]) -> list[Row]:
        from i2tt_server.runners import BlipCaptioner
        from i2tt_server.runners.base import CONFIDENCE

        plan, options = self.plan, self.options
        _, input_name = input_of(target)
        payload, single = self.payload_of(target), not is_ensemble(target)
        limit = min(max_batch_size(step, plan.device) for step in steps_of(target))
        sizes = [b for b in options.batch_sizes if b <= limit] or [limit]
        if single:
            sizes = sizes[-1:]  # one size for the single-model rows: the largest served
        suffix = (f", {joined_dtypes(inprocess.dtype_name(t.runner.dtype) for t in runners)}, "
                  f"{plan.served_threads} thread(s)")
        rows = []

        def measured(row: Row) -> None:
            row.label += suffix
            rows.append(row)
            print_row(row)

        for number, size in enumerate(sizes):
            log(f"{target}: in-process batched, b={size}, {options.batches} batch(es)")
            offset = self.offsets.take(size * options.batches)
            measured(inprocess.run_batched(target, runners, payload, input_name, size,
                                           options.batches, offset, warmup=number == 0))
        if single and CONFIDENCE in runners[0].runner.outputs:
            # the same inputs as the largest batch above (so the same generated lengths), now
            # with the step scores kept and CONFIDENCE computed from them
            log(f"{target}: in-process batched, b={size}, with CONFIDENCE")
            measured(inprocess.run_batched(target, runners, payload, input_name, size,
                                           options.batches, offset, warmup=False,
                                           confidence=True))
        blip = next((t.runner for t in runners if t.runner.name == BlipCaptioner.name), None)
        if blip is not None and not self.roofline:
            photos = [self.payloads.photo(90_000 + i) for i in range(sizes[-1])]
            self.roofline = roofline.encoder_row(blip, photos, plan.served_threads)
        return rows

    # -- served ----------------------------------------------------------------------------

    def served_rows(self, targets: list[str], batching: bool) -> list[Row]:
        """Every target through one server, batching on (unbounded queues, response cache
        on) or off (max_batch_size 1, no cache)."""
        server = self.start_server(targets, batching)
        rows = []
        try:
            for target in targets:
                rows += self.level_rows(server, target, batching)
                if batching and caches_responses(target):
                    rows.append(self.cache_hit_row(server, target))
        finally:
            server.stop()
        return rows

    def start_server(self, targets: list[str], batching: bool):
        from i2tt_server.repository import batching_off, chain, derive_repository, unbounded_queues

        variant, work_dir = "on" if batching else "off", self.options.work_dir
        models = sorted({m for t in targets for m in (t, *steps_of(t))})
        # 64 closed-loop clients exceed the shipped queue limits on a CPU: measure capacity
        edit = chain(self.plan.config_edits(), unbounded_queues if batching else batching_off)
        work_dir.mkdir(parents=True, exist_ok=True)
        repository = derive_repository(REPOSITORY, work_dir / f"repository-{variant}", edit,
                                       models=models)
        log_file = work_dir / f"tritonserver-{variant}.log"
        log(f"starting tritonserver, batching {variant}, models {models} (log: {log_file})")
        t0 = time.perf_counter()
        server = served.start_server(repository, self.plan.weights, log_file,
                                     cache_size=CACHE_BYTES if batching else 0)
        log(f"server ready in {time.perf_counter() - t0:.0f}s")
        return server

    def level_rows(self, server, target: str, batching: bool) -> list[Row]:
        """One row per client concurrency level (the short set for single models)."""
        options, variant = self.options, "on" if batching else "off"
        _, input_name = input_of(target)
        payload, steps = self.payload_of(target), steps_of(target)
        served.drive(server.grpc_url, target, input_name, payload, 1, 1,
                     self.offsets.take(1))  # warm-up
        single = not is_ensemble(target)
        levels = options.concurrency if batching else options.nobatch_concurrency
        rows = []
        for level in (options.single_concurrency if single else levels):
            n = max(options.single_requests if single else options.requests, level)
            log(f"{target}: Triton batching {variant}, c={level}, {n} requests")
            row = served.served_row(server, target, steps, input_name, payload, n, level,
                                    "served" if batching else "served-nobatch",
                                    f"Triton gRPC, batching {variant}, c={level}",
                                    self.offsets.take(n))
            rows.append(row)
            print_row(row)
        return rows

    def cache_hit_row(self, server, target: str) -> Row:
        # The same image again and again: every request after the warm-up's is a
        # response-cache hit (compare with the c=1 row, all misses).
        _, input_name = input_of(target)
        payload, seen = self.payload_of(target), self.offsets.take(1)
        served.drive(server.grpc_url, target, input_name, payload, 1, 1, seen)
        n = max(self.options.requests, 1)
        log(f"{target}: Triton response cache hits, c=1, {n} requests")
        row = served.served_row(server, target, steps_of(target), input_name,
                                lambda i: payload(seen), n, 1, "served-cache",
                                "Triton gRPC, cache hit (repeated image), c=1", 0)
        print_row(row)
        return row

    # -- deadlines -------------------------------------------------------------------------

    def deadline_lines(self, target: str) -> list[str]:
        """Row 6: the shipped queue policy (queue limits and timeouts as configured) under
        callers without deadlines and callers with the CLI's default one."""
        from i2tt_client.cli import DEFAULT_TIMEOUT
        from i2tt_server.repository import derive_repository

        options = self.options
        repository = derive_repository(REPOSITORY, options.work_dir / "repository-shipped",
                                       self.plan.config_edits(), models=[target, *steps_of(target)])
        base = self.offsets.take(2 * options.deadline_callers)
        log(f"deadline check: {options.deadline_callers} callers without a deadline, then "
            f"{options.deadline_callers} with {DEFAULT_TIMEOUT:g} s")
        return deadlines.deadline_check(repository, self.plan.weights,
                                        options.work_dir / "tritonserver-shipped.log", target,
                                        lambda i: self.payloads.photo(base + i),
                                        options.deadline_callers, DEFAULT_TIMEOUT)
