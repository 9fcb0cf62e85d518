"""aiopay_auth's benchmarks: ``python -m benchmarks [--quick]`` (see docs/benchmarks.md)."""
