"""Helpers shared by the tests and the benchmarks (bench/): real-server runners on loopback ports,
waits, ports, fake vLLM pages and a fake pynvml. Test modules import from here, never from each other.
"""
