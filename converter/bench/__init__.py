"""Benchmark harnesses behind ``scripts/benchmark``, ``scripts/bench_convert`` and ``scripts/bench_train``
(not library code: nothing in the conversion imports them)."""
