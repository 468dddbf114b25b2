"""What one simulated instance is (hardware/model parameters) and what is wrong with it (faults).

Parameters are per instance so one fleet can mix fast and slow GPUs, big and small KV caches. Cost
figures are rough Llama-3.1-8B-on-one-H100 numbers: absolute fidelity does not matter to the monitor,
the shapes do (queueing under load, TPOT rising with batch size, TTFT rising with prompt length).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass(frozen=True, slots=True)
class InstanceParams:
    model: str = DEFAULT_MODEL
    max_num_seqs: int = 128
    num_gpu_blocks: int = 4096  # KV cache capacity in blocks of `block_size` tokens
    block_size: int = 16
    max_model_len: int = 8192
    max_num_batched_tokens: int = 2048  # chunked-prefill token budget of one engine step
    speed: float = 1.0  # >1 is a faster GPU: every step takes 1/speed as long
    prefill_s_per_token: float = 0.0001  # 10k prompt tokens/s
    step_base_s: float = 0.012  # fixed cost of any forward pass
    step_s_per_seq: float = 0.00025  # decode cost per sequence in the batch (batch 128 -> 44 ms)
    mean_output_tokens: int = 200  # mean "natural" answer length when a request does not ignore EOS
    prefix_caching: bool = True
    time_scale: float = 1.0  # wall seconds per simulated second; tests run at 0.1-0.5
    seed: int = 0
    # speculative decoding (`--speculative-config`): None is off; else the share of draft tokens accepted
    spec_decode_acceptance: float | None = None
    num_speculative_tokens: int = 3
    # vLLM's `--max-num-queued-reqs`: more waiting requests than this are refused with 503 (None: no limit)
    max_num_queued_reqs: int | None = None
    # per-version behaviour (a canary's candidate): decode steps and prefill cost these many times more
    tpot_factor: float = 1.0
    ttft_factor: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_num_seqs", "num_gpu_blocks", "block_size", "max_model_len", "max_num_batched_tokens",
                     "mean_output_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("speed", "time_scale", "tpot_factor", "ttft_factor"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        for name in ("prefill_s_per_token", "step_base_s", "step_s_per_seq"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        if self.spec_decode_acceptance is not None and not 0.0 <= self.spec_decode_acceptance <= 1.0:
            problems.append("spec_decode_acceptance must be from 0 to 1")
        if self.num_speculative_tokens < 1:
            problems.append("num_speculative_tokens must be at least 1")
        if self.max_num_queued_reqs is not None and self.max_num_queued_reqs < 1:
            problems.append("max_num_queued_reqs must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))

    def with_(self, **changes: Any) -> InstanceParams:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultError(ValueError):
    """A /sim/faults body that cannot be applied; the message names the key."""


SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")  # vLLM's sleep levels 0, 1, 2


@dataclass(frozen=True, slots=True)
class Faults:
    """Injected misbehaviour. `POST /sim/faults` replaces the whole set, so `{}` clears everything.

    The hang shapes users report of vLLM, each on its own so a monitor can be tested against each:
    - `engine_dead`: the EngineCore process is dead but the API server lives (vllm#39863): `/health`
      200, `/metrics` served, running 0, new requests accepted into a waiting queue that only grows,
      nothing finishes, no engine steps;
    - `health_timeout`: `/health` never answers while `/metrics` and the engine work on;
    - `metrics_frozen`: `/metrics` serves the same page byte for byte from the moment the fault is set,
      while `/health` answers 200 (combine with `engine_dead` for a wedged engine whose stats stopped);
    - `hang`: the engine stops stepping and `/health` never answers (the older shape);
    - `dead`: the whole server fails: `/health` 503, requests 500.
    `sleep` is vLLM's sleep mode (level 1 weights offloaded, 2 everything discarded): the engine does
    not step, `vllm:engine_sleep_state` says so, `/health` stays 200 and requests wait in the queue
    until it wakes, as on a vLLM server put to sleep with `POST /sleep`.
    """

    latency_multiplier: float = 1.0  # every engine step takes this many times as long
    error_rate: float = 0.0  # share of requests failed with HTTP 500 and finished_reason="error"
    kv_cache_leak: bool = False  # KV blocks of finished requests are never returned
    hang: bool = False  # the engine stops stepping and /health never answers
    dead: bool = False  # the engine is gone: /health 503, requests 500
    engine_dead: bool = False
    health_timeout: bool = False
    metrics_frozen: bool = False
    sleep: int = 0  # 0 awake, 1 weights offloaded, 2 discard all
    # speculative decoding acceptance rate (0-1) overriding the instance's `--spec-decode-acceptance`
    spec_decode_acceptance: float | None = None
    kv_transfer_delay_s: float = 0.0  # each new request waits this long as `deferred` (a KV transfer)
    max_num_queued_reqs: int | None = None  # overrides the instance's `--max-num-queued-reqs`

    @property
    def active(self) -> dict[str, Any]:
        """Only the faults that differ from a healthy instance (what the demo and /sim/state show)."""
        healthy = Faults()
        return {k: v for k, v in asdict(self).items() if v != getattr(healthy, k)}

    @property
    def engine_stopped(self) -> bool:
        """The engine takes no step: hung, dead in either way, or asleep."""
        return self.hang or self.dead or self.engine_dead or self.sleep > 0

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        if not isinstance(body, dict):
            raise FaultError("expected a JSON object such as {\"latency_multiplier\": 4} ({} clears all faults)")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise FaultError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}

        def number(name: str) -> float | None:
            v = body[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return None
            return float(v)

        if "latency_multiplier" in body:
            v = number("latency_multiplier")
            if v is None or not v > 0:
                raise FaultError("latency_multiplier: expected a number above 0")
            values["latency_multiplier"] = v
        for name in ("error_rate", "spec_decode_acceptance"):
            if name in body:
                if name == "spec_decode_acceptance" and body[name] is None:
                    continue
                v = number(name)
                if v is None or not 0.0 <= v <= 1.0:
                    raise FaultError(f"{name}: expected a number from 0 to 1")
                values[name] = v
        if "kv_transfer_delay_s" in body:
            v = number("kv_transfer_delay_s")
            if v is None or not 0.0 <= v <= 3600.0:
                raise FaultError("kv_transfer_delay_s: expected seconds from 0 to 3600")
            values["kv_transfer_delay_s"] = v
        if "sleep" in body:
            v = body["sleep"]
            if isinstance(v, bool) or v not in (0, 1, 2):
                raise FaultError("sleep: expected 0 (awake), 1 (weights offloaded) or 2 (discard all)")
            values["sleep"] = int(v)
        if body.get("max_num_queued_reqs") is not None:
            v = body["max_num_queued_reqs"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FaultError("max_num_queued_reqs: expected a whole number of at least 1")
            values["max_num_queued_reqs"] = v
        for name in ("kv_cache_leak", "hang", "dead", "engine_dead", "health_timeout", "metrics_frozen"):
            if name in body:
                if not isinstance(body[name], bool):
                    raise FaultError(f"{name}: expected true or false")
                values[name] = body[name]
        return cls(**values)


@dataclass(slots=True)
class FleetSpec:
    """How `slo-monitor simulate` and the demo lay out a fleet: per-instance overrides cycle."""

    instances: int
    base: InstanceParams = field(default_factory=InstanceParams)
    speeds: tuple[float, ...] = ()
    kv_blocks: tuple[int, ...] = ()
    max_num_seqs: tuple[int, ...] = ()

    def params(self, index: int) -> InstanceParams:
        changes: dict[str, Any] = {"seed": self.base.seed + index}
        if self.speeds:
            changes["speed"] = self.speeds[index % len(self.speeds)]
        if self.kv_blocks:
            changes["num_gpu_blocks"] = self.kv_blocks[index % len(self.kv_blocks)]
        if self.max_num_seqs:
            changes["max_num_seqs"] = self.max_num_seqs[index % len(self.max_num_seqs)]
        return self.base.with_(**changes)
