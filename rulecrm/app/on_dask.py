"""Running a partitioned replay's tasks on a Dask cluster: a local one of worker processes
(`--workers K`) or an existing one (`--scheduler tcp://HOST:PORT`).

Dask is an optional extra (`pip install 'rulecrm[dask]'`) and is imported in this module only.
Every path a task is handed must be one every worker reaches under the same name: on a local
cluster any path is; on a remote one the rules, the events and the state directory must be on a
file system all the machines share.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError

from rulecrm.app.partitioned_replay import progress_bar
from rulecrm.app.stopping import Interrupted
from rulecrm.errors import RulecrmError, UsageError

POLL = 0.05  # seconds between looks at the tasks and at the stop flag
CONNECT_TIMEOUT = "20s"  # for a scheduler that does not answer


class DaskTasks:
    """A phase's tasks submitted to a Dask client, waited for with a stop flag and a progress bar."""

    in_process = False

    def __init__(self, client, *, progress: bool = False, stop: Callable[[], bool] | None = None):
        self.client = client
        self.progress = progress
        self.stop = stop
        self.parallelism = max(1, sum(client.nthreads().values()))

    def run(self, task: Callable, jobs: Sequence, description: str) -> list:
        from distributed import KilledWorker

        # pure=False: the same task of a second run must run again, not be taken from a cache
        futures = self.client.map(task, list(jobs), pure=False)
        pending = set(futures)
        try:
            with progress_bar(self.progress, len(futures), description) as bar:
                while pending:
                    if self.stop is not None and self.stop():
                        raise Interrupted()
                    done = {future for future in pending if future.done()}
                    for future in done:
                        if future.status != "finished":
                            future.result()  # raises the task's exception
                    pending -= done
                    bar.update(len(done))
                    if pending and not done:
                        time.sleep(POLL)
            return [future.result() for future in futures]
        except KilledWorker as exc:
            raise RulecrmError(f"a Dask worker died running a task of phase '{description}' ({exc}); "
                               "see the worker's log (out of memory?)") from None
        except CancelledError:
            raise RulecrmError(f"the Dask cluster cancelled the tasks of phase '{description}' (was the scheduler "
                               "restarted?); run the command again") from None
        finally:
            if pending:
                self.client.cancel(list(pending))


@contextlib.contextmanager
def dask_tasks(*, workers: int | None = None, scheduler: str | None = None, progress: bool = False,
               stop: Callable[[], bool] | None = None) -> Iterator[DaskTasks]:
    """Tasks on a new local cluster of `workers` processes (one thread each, on 127.0.0.1), closed at
    the end, or on the cluster whose scheduler is at `scheduler` (left running)."""
    try:
        import dask.config
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("--workers and --scheduler need Dask: pip install 'rulecrm[dask]'") from None
    with contextlib.ExitStack() as resources:
        if workers is not None:
            # the scheduler's and workers' scratch space, removed with the cluster (Dask leaves its own in TMPDIR)
            scratch = resources.enter_context(tempfile.TemporaryDirectory(prefix="rulecrm-dask-"))
            resources.enter_context(dask.config.set({"temporary-directory": scratch}))
            # silent workers: the command reports a failed task itself, in one line
            cluster = resources.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", scheduler_port=0,
                dashboard_address=None, silence_logs=logging.CRITICAL,
            ))
            client = resources.enter_context(Client(cluster))
        else:
            try:
                client = resources.enter_context(Client(scheduler, timeout=CONNECT_TIMEOUT))
            except (OSError, TimeoutError) as exc:
                raise RulecrmError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        yield DaskTasks(client, progress=progress, stop=stop)
