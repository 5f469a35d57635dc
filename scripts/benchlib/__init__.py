"""Measuring code behind scripts/bench.py. ``targets``: what can be measured (from the
configs and the runners registry); ``settings``, ``weights``, ``plan``: what one run uses,
resolved once; ``phases``: the rows in order; ``inputs``, ``inprocess``, ``served``,
``deadlines``, ``roofline``: the measurements; ``stats``, ``console``, ``report``: the rows,
as printed and as reported. Each module is usable on its own."""
