"""Command-line front: parse the options and run. The work lives in ``extractors`` and ``io_utils``."""
import signal
import sys

import extractors  # noqa: F401  (registers every feature type before parsing)
from extractors.cli import COMMANDS, parse_options
from extractors.runner import run
from io_utils.errors import UsageError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        return _reporting_usage_errors(COMMANDS[argv[0]], argv[1:])
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    return _reporting_usage_errors(run, options)


def _reporting_usage_errors(command, arguments) -> int:
    try:
        return command(arguments)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _interrupt(signum, frame) -> None:
    """SIGTERM stops a run like Ctrl-C: workers are stopped, partial files removed, a re-run resumes."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
