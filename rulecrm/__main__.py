"""`python -m rulecrm` (and the `rulecrm` script) run the command line."""
import sys


def main() -> None:
    if sys.argv[1:2] in (["run"], ["replay"]):
        # Before importing the command line (a tenth of a second or more): from here on a SIGTERM
        # or Ctrl-C stops the runner (or the replay) cleanly, even while it is still starting.
        from rulecrm.app.stopping import catch_stop_signals

        catch_stop_signals(keep=True)
    from rulecrm.cli import entry

    entry()


if __name__ == "__main__":
    main()
