"""What to send: prompt and output lengths drawn like vLLM's `random` benchmark dataset.

Lengths are uniform in [mean * (1 - range_ratio), mean * (1 + range_ratio)]; every request asks for
exactly its output length (`ignore_eos`), so offered load is known in tokens, not just requests.
A shared prefix of `prefix_tokens` words (a system prompt) gives the prefix cache something to hit.
Prompts are words, one token each on the simulator (and roughly one to two on a real tokenizer).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_VOCABULARY = tuple(f"w{i}" for i in range(4096))


@dataclass(frozen=True, slots=True)
class RequestSpec:
    prompt: str
    prompt_tokens: int
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Workload:
    prompt_tokens: int = 256
    output_tokens: int = 128
    range_ratio: float = 0.5
    prefix_tokens: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise ValueError("prompt and output lengths must be at least 1 token")
        if not 0.0 <= self.range_ratio < 1.0:
            raise ValueError("range ratio must be in [0, 1)")
        if self.prefix_tokens < 0:
            raise ValueError("prefix length must not be negative")

    def generator(self) -> RequestGenerator:
        return RequestGenerator(self)


class RequestGenerator:
    """A deterministic stream of requests for one run (same seed, same requests)."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.rng = random.Random(workload.seed)
        prefix_rng = random.Random(workload.seed ^ 0x5EED)
        self.prefix = prefix_rng.choices(_VOCABULARY, k=workload.prefix_tokens)

    def _length(self, mean: int) -> int:
        r = self.workload.range_ratio
        low, high = max(1, int(mean * (1 - r))), max(1, int(mean * (1 + r)))
        return self.rng.randint(low, high)

    def next(self) -> RequestSpec:
        n_prompt = self._length(self.workload.prompt_tokens)
        words = self.prefix + self.rng.choices(_VOCABULARY, k=n_prompt)
        return RequestSpec(" ".join(words), len(words), self._length(self.workload.output_tokens))
