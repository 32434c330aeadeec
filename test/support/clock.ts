import type { Clock } from '../../src/security/clock.ts';

export interface TestClock extends Clock {
  advanceSeconds(seconds: number): void;
}

/** A clock that moves only when told, so expiry is tested without sleeping. */
export function createTestClock(start = new Date('2026-11-25T12:00:00Z')): TestClock {
  let nowMs = start.getTime();
  return {
    now: () => new Date(nowMs),
    advanceSeconds(seconds) {
      nowMs += seconds * 1000;
    },
  };
}
