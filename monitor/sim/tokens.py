"""A stand-in tokenizer: one whitespace-separated word is one token.

A real tokenizer would add a dependency and megabytes of vocabulary for nothing the monitor can see.
Words keep the two properties that matter: prompt length is predictable from the text (the load
generator sends N words to get N prompt tokens), and equal prefixes give equal KV blocks, so the
prefix cache hits exactly where vLLM's would.
"""

from __future__ import annotations

from typing import Any, Sequence

# Synthetic output: ASCII words, so they can be pasted into JSON without escaping.
WORDS = ("the", "model", "answers", "with", "plain", "tokens", "for", "a", "simulated", "fleet", "of",
         "servers", "and", "each", "word", "is", "one", "token", "so", "counts", "match")


def tokenize_text(text: str) -> list[str]:
    return text.split()


def tokenize_prompt(prompt: Any) -> list[Any] | None:
    """Tokens of an OpenAI `prompt`: a string, or a list of token ids; None when unsupported."""
    if isinstance(prompt, str):
        return tokenize_text(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return tokenize_text(prompt[0])
    return None


def tokenize_messages(messages: Any) -> list[str] | None:
    """Tokens of chat `messages`: a role marker per message, then the words of its content."""
    if not isinstance(messages, list) or not messages:
        return None
    tokens: list[str] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return None
        tokens.append(f"<|{message['role']}|>")
        content = message.get("content")
        if isinstance(content, str):
            tokens.extend(tokenize_text(content))
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    tokens.extend(tokenize_text(part["text"]))
        elif content is not None:
            return None
    tokens.append("<|assistant|>")
    return tokens


def block_hashes(tokens: Sequence[Any], block_size: int) -> tuple[int, ...]:
    """Chained hashes of the full blocks of a prompt: block i's hash covers blocks 0..i, as in vLLM,
    so a block is reused only when the whole prefix before it is the same."""
    hashes = []
    previous = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        previous = hash((previous, tuple(tokens[start:start + block_size])))
        hashes.append(previous)
    return tuple(hashes)


def output_word(request_seed: int, index: int) -> str:
    return WORDS[(request_seed + index * 7) % len(WORDS)]
