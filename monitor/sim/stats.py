"""What the engine hands the page after each step and each finished request (vLLM V1's
`IterationStats` and `FinishedRequestStats`): plain figures; the page (`metrics.py`) decides which
families of which metrics version they feed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FinishedStats:
    """Per-request figures vLLM records when a request finishes (V1 `FinishedRequestStats`)."""

    finish_reason: str
    e2e_latency: float
    queued_time: float
    prefill_time: float
    inference_time: float
    decode_time: float
    prompt_tokens: int
    generation_tokens: int
    max_tokens_param: int | None
    computed_prompt_tokens: int  # prompt tokens not served from the prefix cache
    mean_time_per_output_token: float | None
    preemptions: int = 0


@dataclass(frozen=True, slots=True)
class StepStats:
    """What one engine step did (V1 `IterationStats`; scheduler gauges are read at scrape time)."""

    prompt_tokens: int  # full prompt length of requests that produced their first token this step
    cached_prompt_tokens: int  # of those, tokens served from the prefix cache
    generation_tokens: int
    preemptions: int
    ttfts: tuple[float, ...]
    itls: tuple[float, ...]
    prefix_queries: int
    prefix_hits: int
    # speculative decoding: drafts proposed, draft tokens, accepted tokens, accepted per draft position
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_per_pos: tuple[int, ...] = ()
