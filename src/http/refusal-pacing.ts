import type { FastifyInstance } from 'fastify';

export interface RefusalPacing {
  /** Refusals a second answered at once; past them, each waits `delayMs` before it is sent. */
  undelayedPerSecond: number;
  /** How long a refusal past the budget is held; 0 turns pacing off. */
  delayMs: number;
  /** Answers held at once at most; past it, refusals go out at once (a hold must not become the exhausted resource). */
  maxHeld: number;
}

export const REFUSAL_PACING: RefusalPacing = { undelayedPerSecond: 50, delayMs: 1000, maxHeld: 10_000 };

export interface RefusalPacer {
  /** Returns how long to hold the next refusal: 0 while this second's budget lasts. */
  delayFor(): number;
  /** Resolves after `ms` (at once for 0), or sooner when the app closes. */
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
  const holds = new Map<NodeJS.Timeout, () => void>();
  return {
    delayFor() {
      if (pacing.delayMs === 0) return 0;
      const at = now();
      if (at - windowStartedAt >= 1000) {
        windowStartedAt = at;
        refusedInWindow = 0;
      }
      refusedInWindow += 1;
      if (refusedInWindow <= pacing.undelayedPerSecond || holds.size >= pacing.maxHeld) return 0;
      return pacing.delayMs;
    },
    hold(ms) {
      if (ms <= 0) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          holds.delete(timer);
          resolve();
        }, ms);
        holds.set(timer, resolve);
      });
    },
    held: () => holds.size,
    releaseAll() {
      for (const [timer, resolve] of holds) {
        clearTimeout(timer);
        resolve();
      }
      holds.clear();
    },
  };
}

/** Held answers go out when the server starts to close, so that pacing never delays a shutdown. */
export function releaseHeldRefusalsOnClose(app: FastifyInstance, pacer: RefusalPacer): void {
  app.addHook('preClose', async () => pacer.releaseAll());
  app.addHook('onClose', async () => pacer.releaseAll());
}
