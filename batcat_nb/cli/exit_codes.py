"""The exit status of every ``batcat`` command: 0 done, 1 a run failed, 2 a usage mistake, 130 Ctrl-C."""

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
