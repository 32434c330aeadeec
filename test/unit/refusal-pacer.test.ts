import { describe, expect, it } from 'vitest';
import { createRefusalPacer } from '../../src/http/refusal-pacing.ts';

const pacerAt = (start: number, options = { undelayedPerSecond: 3, delayMs: 1000, maxHeld: 2 }) => {
  let now = start;
  const pacer = createRefusalPacer(options, () => now);
  return { pacer, advance: (ms: number) => (now += ms) };
};

describe('refusal pacer', () => {
  it('answers the first refusals of a second at once and delays the rest', () => {
    const { pacer } = pacerAt(10_000);
    expect([pacer.delayFor(), pacer.delayFor(), pacer.delayFor()]).toEqual([0, 0, 0]);
    expect(pacer.delayFor()).toBe(1000);
  });

  it('gives a new second its own undelayed refusals', () => {
    const { pacer, advance } = pacerAt(10_000);
    for (let i = 0; i < 4; i += 1) pacer.delayFor();
    advance(1000);
    expect(pacer.delayFor()).toBe(0);
  });

  it('answers at once when as many answers as allowed are already held', async () => {
    const { pacer } = pacerAt(10_000, { undelayedPerSecond: 0, delayMs: 60_000, maxHeld: 2 });
    const held = [pacer.hold(pacer.delayFor()), pacer.hold(pacer.delayFor())];
    expect(pacer.held()).toBe(2);
    expect(pacer.delayFor()).toBe(0);
    pacer.releaseAll();
    await Promise.all(held);
    expect(pacer.held()).toBe(0);
  });

  it('is off with a delay of 0', () => {
    const { pacer } = pacerAt(10_000, { undelayedPerSecond: 0, delayMs: 0, maxHeld: 10 });
    expect(pacer.delayFor()).toBe(0);
  });

  it('holds an answer for its delay', async () => {
    const pacer = createRefusalPacer({ undelayedPerSecond: 0, delayMs: 30, maxHeld: 10 });
    const started = performance.now();
    await pacer.hold(pacer.delayFor());
    expect(performance.now() - started).toBeGreaterThanOrEqual(25);
  });

  it('releases refusals that come due together a few at a time, so that other work runs between them', async () => {
    const pacer = createRefusalPacer({ undelayedPerSecond: 0, delayMs: 20, maxHeld: 1000 });
    let released = 0;
    let releasedBeforeNextTurn: number | undefined;
    const held = Array.from({ length: 40 }, () =>
      pacer.hold(pacer.delayFor()).then(() => {
        released += 1;
        if (released === 1) setImmediate(() => (releasedBeforeNextTurn = released));
      }),
    );
    await Promise.all(held);
    await new Promise((resolve) => setImmediate(resolve));
    expect(released).toBe(40);
    expect(releasedBeforeNextTurn).toBeGreaterThan(0);
    expect(releasedBeforeNextTurn).toBeLessThan(40);
    expect(pacer.held()).toBe(0);
  });

  it('still releases every held refusal when the app closes', async () => {
    const pacer = createRefusalPacer({ undelayedPerSecond: 0, delayMs: 60_000, maxHeld: 1000 });
    const held = Array.from({ length: 30 }, () => pacer.hold(pacer.delayFor()));
    expect(pacer.held()).toBe(30);
    pacer.releaseAll();
    await Promise.all(held);
    expect(pacer.held()).toBe(0);
  });
});
