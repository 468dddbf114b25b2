"""KV-cache block accounting and the prefix cache of one simulated engine.

Blocks are counted, not stored: a running request holds ceil(tokens_with_kv / block_size) blocks.
The prefix cache remembers hashes of prompt blocks already computed (LRU, at most the cache's size),
which is what vLLM's free-but-cached blocks amount to. Blocks are not shared between concurrent
requests with a common prefix (vLLM shares them), so usage is somewhat overstated for workloads that
share long prefixes; hits still save the prefill compute, which is what TTFT shows.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable


class KvCache:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.used = 0  # blocks held by running requests
        self.leaked = 0  # blocks lost to the kv_cache_leak fault
        self._cached: OrderedDict[int, None] = OrderedDict()

    @property
    def free(self) -> int:
        return self.num_blocks - self.used - self.leaked

    @property
    def usage(self) -> float:
        return min(1.0, (self.used + self.leaked) / self.num_blocks)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def grow(self, held: int, tokens: int) -> int | None:
        """Blocks a request holds after growing to `tokens`; None when the cache cannot give them."""
        need = self.blocks_for(tokens) - held
        if need <= 0:
            return held
        if need > self.free:
            return None
        self.used += need
        return held + need

    def release(self, held: int, leak: bool = False) -> None:
        self.used -= held
        if leak:
            self.leaked = min(self.num_blocks, self.leaked + held)

    def clear_leak(self) -> None:
        self.leaked = 0

    def forget_cached(self) -> None:
        """Drop the prefix cache (vLLM resets it when the engine goes to sleep)."""
        self._cached.clear()

    def cached_blocks(self, hashes: Iterable[int]) -> int:
        """How many leading blocks of a prompt are in the prefix cache (touching them as recently used)."""
        if not self.prefix_caching:
            return 0
        hits = 0
        for h in hashes:
            if h not in self._cached:
                break
            self._cached.move_to_end(h)
            hits += 1
        return hits

    def remember(self, hashes: Iterable[int]) -> None:
        if not self.prefix_caching:
            return
        for h in hashes:
            self._cached[h] = None
            self._cached.move_to_end(h)
        while len(self._cached) > self.num_blocks:
            self._cached.popitem(last=False)
