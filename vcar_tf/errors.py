"""User-facing errors: one line on stderr and a non-zero exit, never a traceback."""

import argparse
import functools
import signal
import sys
import threading


class VcarError(Exception):
    """An error caused by the user's input; its message is shown as is."""


def first_line(error):
    """The first line of an exception's message (libraries raise multi-line dumps), or its type's name.
    A TF OpError's `message` is used where it has one (str() may append the op's context)."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `docker stop`, a batch scheduler), raised like Ctrl-C so that the same
    cleanups run: no temp file or partial output is left."""


def _raise_terminated(signum, frame):
    raise Terminated()


def cli_main(fn):
    """Wrap a CLI entry point so VcarError and OS errors end with one line and exit code 2, and
    SIGTERM ends it as Ctrl-C does (exit code 143)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return fn(*args, **kwargs)
        except Terminated:
            print("error: terminated (SIGTERM)", file=sys.stderr)
            sys.exit(128 + signal.SIGTERM)
        except VcarError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:
            print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors end like every other bad input: one `error:` line, exit code 2.
    Flags are spelled with underscores, as train_main.py's; `--codec-folder` is read as
    `--codec_folder` (and so on for every flag), so either spelling works."""

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([self._underscored(a) for a in args], namespace)

    def _underscored(self, arg):
        if not arg.startswith("--") or "-" not in arg[2:].split("=", 1)[0]:
            return arg
        flag, sep, value = arg.partition("=")
        twin = "--" + flag[2:].replace("-", "_")
        return twin + sep + value if twin in self._option_string_actions else arg

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)
