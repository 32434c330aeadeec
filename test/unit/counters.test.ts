import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
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

describe('in-process counters under a fake clock', () => {
  const advanceSeconds = (seconds: number) => vi.setSystemTime(Date.now() + seconds * 1000);
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'], now: new Date('2026-12-01T12:00:00Z') });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('forgets a key whose window has ended, and one refunded to nothing, so that the store holds no keys', async () => {
    const store = createCounterStore();
    const counter = store.counter({ name: 'c', limit: 3, windowSeconds: 60 });
    for (let i = 0; i < 1000; i += 1) await counter.hit(`expiring-${i}`);
    for (let i = 0; i < 1000; i += 1) {
      await counter.hit(`refunded-${i}`);
      await counter.refund(`refunded-${i}`);
    }
    expect(store.heldKeys()).toBe(1000);
    advanceSeconds(61);
    expect(store.heldKeys()).toBe(0);
    await store.close();
  });

  it('ignores a refund that comes after its window ended: the next window starts from nothing, not below', async () => {
    const store = createCounterStore();
    const counter = store.counter({ name: 'c', limit: 3, windowSeconds: 60 });
    await counter.hit('k');
    advanceSeconds(61);
    await counter.refund('k');
    const readings = [];
    for (let i = 0; i < 4; i += 1) readings.push(await counter.hit('k'));
    expect(readings.map((reading) => reading.count)).toEqual([1, 2, 3, 4]);
    // A full window from the first hit after the refund, not from the refund.
    expect(readings[0]?.msBeforeReset).toBe(60_000);
    await store.close();
  });
});
