"""The CLI's exit codes (docs/cli.md: 0 success, 2 bad input, 1 anything else)."""

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
