"""The test suite; a package so test modules and `bench/` can import `tests.helpers` from the repository root."""
