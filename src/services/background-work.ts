/** Work a request starts and does not wait for: what it found must not show in the answer or its timing. */
export interface BackgroundWork {
  /** Runs the task after the current request has been answered; a failure goes to `onFailed`, never to the client. */
  run(name: string, task: () => Promise<void>): void;
  /** Starts every delayed task now and resolves once all started so far have finished: closing the app waits for it. */
  settled(): Promise<void>;
}

/**
 * Builds a tracker of background tasks that reports each failure with the task's name. `delayMs` is drawn for each
 * task: run at once, the work of a known address (a transaction, a mail) would slow the client's very next request,
 * and a client alternating known and unknown addresses would read it there. Delayed by a random fraction of a second,
 * that cost lands on whichever requests happen to be running then.
 */
export function createBackgroundWork(
  onFailed: (name: string, error: unknown) => void,
  delayMs: () => number = () => 0,
): BackgroundWork {
  const pending = new Set<Promise<void>>();
  const delayed = new Map<NodeJS.Timeout, () => void>();
  const startDelayed = () => {
    for (const [timer, start] of delayed) {
      clearTimeout(timer);
      start();
    }
    delayed.clear();
  };
  return {
    run(name, task) {
      const wait = delayMs();
      const done: Promise<void> = new Promise<void>((resolve) => {
        // setImmediate at least: after the reply's write, which the handler's return schedules on the microtask queue.
        if (wait <= 0) {
          setImmediate(resolve);
          return;
        }
        const timer = setTimeout(() => {
          delayed.delete(timer);
          resolve();
        }, wait);
        delayed.set(timer, resolve);
      })
        .then(task)
        .catch((error: unknown) => onFailed(name, error))
        .finally(() => pending.delete(done));
      pending.add(done);
    },
    async settled() {
      while (pending.size > 0) {
        startDelayed();
        await Promise.all([...pending]);
      }
    },
  };
}
