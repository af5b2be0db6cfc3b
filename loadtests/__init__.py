"""The SRE load-test tool: open-loop scenarios against gateway nodes, HdrHistogram latencies,
a correctness verdict, SLO checks and a one-command local benchmark (``python -m loadtests``).

See ``loadtests/README.md``.
"""
