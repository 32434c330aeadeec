import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createCounterStore } from '../../src/db/counters.ts';

describe('in-process counters', () => {
  it('keeps a key of a 30-day window across turns of the event loop (Node timers stop at 24.8 days)', async () => {
    const counter = createCounterStore().counter({ name: 'month', limit: 100, windowSeconds: 30 * 86400 });
    expect((await counter.hit('k')).count).toBe(1);
    await sleep(20);
    expect(await counter.hit('k')).toMatchObject({ count: 2 });
  });

  it('counts concurrent hits of one key one by one, and blocks a key that goes past its limit', async () => {
    const counter = createCounterStore().counter({
      name: 'c',
      limit: 3,
      windowSeconds: 60,
      blockSeconds: 600,
    });
    const readings = await Promise.all(Array.from({ length: 5 }, () => counter.hit('k')));
    expect(readings.map((reading) => reading.count).sort()).toEqual([1, 2, 3, 4, 5]);
    expect((await counter.hit('k')).msBeforeReset).toBeGreaterThan(60_000);
    await counter.reset('k');
    expect((await counter.hit('k')).count).toBe(1);
    await counter.refund('k');
    expect((await counter.hit('k')).count).toBe(1);
  });
});
