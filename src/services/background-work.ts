/** Work a request starts and does not wait for: what it found must not show in the answer or its timing. */
export interface BackgroundWork {
  /** Runs the task after the current request has been answered; a failure goes to `onFailed`, never to the client. */
  run(name: string, task: () => Promise<void>): void;
  /** Resolves once every task started so far has finished: closing the app waits for it. */
  settled(): Promise<void>;
}

/** Builds a tracker of background tasks that reports each failure with the task's name. */
export function createBackgroundWork(onFailed: (name: string, error: unknown) => void): BackgroundWork {
  const pending = new Set<Promise<void>>();
  return {
    run(name, task) {
      // setImmediate: after the reply's write, which the handler's return schedules on the microtask queue.
      const done: Promise<void> = new Promise<void>((resolve) => setImmediate(resolve))
        .then(task)
        .catch((error: unknown) => onFailed(name, error))
        .finally(() => pending.delete(done));
      pending.add(done);
    },
    async settled() {
      while (pending.size > 0) await Promise.all([...pending]);
    },
  };
}
