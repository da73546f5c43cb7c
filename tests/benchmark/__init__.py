"""Side-by-side benchmark of rangefs and its peers (run_benchmark.py); not a pytest suite."""
