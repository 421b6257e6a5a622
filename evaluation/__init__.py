"""Benchmark readers (OPRA, EPIC-Hotspots, AssistQ), the two metric protocols, baselines and `maskahand eval`."""
