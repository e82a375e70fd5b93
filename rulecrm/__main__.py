"""`python -m rulecrm` (and the `rulecrm` script) run the command line."""
import functools
import gc
import sys


def main() -> None:
    if sys.argv[1:2] in (["run"], ["replay"]):
        # Before importing the command line (a tenth of a second or more): from here on a SIGTERM
        # or Ctrl-C stops the runner (or the replay) cleanly, even while it is still starting.
        from rulecrm.app.stopping import catch_stop_signals

        catch_stop_signals(keep=True)
    # Starting builds what lives as long as the process: modules, classes, the plugins and their
    # commands. The cyclic collector would walk it again and again while it grows, and free nothing
    # (about a twentieth of `rulecrm check`); once it is built, it is frozen out of later collections.
    collecting = gc.isenabled()
    gc.disable()
    from rulecrm.cli import entry

    entry(started=functools.partial(_started, collecting))


def _started(collecting: bool) -> None:
    gc.freeze()
    if collecting:
        gc.enable()


if __name__ == "__main__":
    main()
