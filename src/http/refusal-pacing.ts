import type { FastifyInstance } from 'fastify';

export interface RefusalPacing {
  /** Refusals a second answered at once; past them, each waits `delayMs` before it is sent. */
  undelayedPerSecond: number;
  /** How long a refusal past the budget is held; 0 turns pacing off. */
  delayMs: number;
  /** Answers held at once at most; past it, refusals go out at once (a hold must not become the exhausted resource). */
  maxHeld: number;
}

// A refused request costs the event loop 0.1-0.2 ms in all (parsing, the reply, its log line): eight make a batch of
// about a millisecond.
const RELEASED_PER_TURN = 8;

export const REFUSAL_PACING: RefusalPacing = { undelayedPerSecond: 50, delayMs: 1000, maxHeld: 10_000 };

export interface RefusalPacer {
  /** Returns how long to hold the next refusal: 0 while this second's budget lasts. */
  delayFor(): number;
  /** Resolves after `ms` (at once for 0), or sooner when the app closes; callers hold for one delay (delayFor's). */
  hold(ms: number): Promise<void>;
  held(): number;
  releaseAll(): void;
}

/**
 * A client that floods the token endpoint sends its next request as soon as its last is refused: answered at once,
 * a few hundred connections keep the event loop busy with refusals alone, and every other route waits behind them
 * (measured: /conversation's p99 at 100-150× its value at rest under 256 flooding connections). Holding refusals past
 * a small budget a second makes such a flood wait instead, at the cost of a timer each; a refused client had to wait
 * its Retry-After anyway. The budget keeps a rare refusal immediate. Wall-clock time, not the injected clock: this is
 * about load, not about the rules.
 */
export function createRefusalPacer(
  pacing: RefusalPacing,
  now: () => number = () => performance.now(),
): RefusalPacer {
  let windowStartedAt = Number.NEGATIVE_INFINITY;
  let refusedInWindow = 0;
  // In the order they come due (every hold has the same delay, so appending keeps the order).
  const holds: { dueAt: number; release: () => void }[] = [];
  let timer: NodeJS.Timeout | undefined;
  let releasing = false;

  // A flood's refusals arrive together and so come due together: sent in one go, hundreds of answers held the event
  // loop for tens of milliseconds once a second. A few at a time, with the loop's I/O between the batches (measured
  // with 500 flooding connections and a steady 1,000 reads a second: the reads' p99 went from 44-77 ms to 11-16 ms).
  const releaseDue = () => {
    timer = undefined;
    releasing = false;
    const at = performance.now();
    let released = 0;
    while (holds.length > 0 && (holds[0] as { dueAt: number }).dueAt <= at) {
      if (released === RELEASED_PER_TURN) {
        releasing = true;
        setImmediate(releaseDue);
        return;
      }
      holds.shift()?.release();
      released += 1;
    }
    schedule();
  };
  const schedule = () => {
    const next = holds[0];
    if (next === undefined || timer !== undefined || releasing) return;
    timer = setTimeout(releaseDue, Math.max(0, next.dueAt - performance.now()));
  };

  return {
    delayFor() {
      if (pacing.delayMs === 0) return 0;
      const at = now();
      if (at - windowStartedAt >= 1000) {
        windowStartedAt = at;
        refusedInWindow = 0;
      }
      refusedInWindow += 1;
      if (refusedInWindow <= pacing.undelayedPerSecond || holds.length >= pacing.maxHeld) return 0;
      return pacing.delayMs;
    },
    hold(ms) {
      if (ms <= 0) return Promise.resolve();
      return new Promise<void>((release) => {
        holds.push({ dueAt: performance.now() + ms, release });
        schedule();
      });
    },
    held: () => holds.length,
    releaseAll() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      for (const { release } of holds.splice(0)) release();
    },
  };
}

/** Held answers go out when the server starts to close, so that pacing never delays a shutdown. */
export function releaseHeldRefusalsOnClose(app: FastifyInstance, pacer: RefusalPacer): void {
  app.addHook('preClose', async () => pacer.releaseAll());
  app.addHook('onClose', async () => pacer.releaseAll());
}
