import { describe, expect, it } from 'vitest';
import { createBackgroundWork } from '../../src/services/background-work.ts';

describe('background work', () => {
  it('starts a task only after the current turn, so that the answer goes out first', async () => {
    const order: string[] = [];
    const work = createBackgroundWork(() => {});
    work.run('task', async () => {
      order.push('task');
    });
    await Promise.resolve();
    order.push('answer');
    await work.settled();
    expect(order).toEqual(['answer', 'task']);
  });

  it('reports a failure with its task name and never throws it to the caller', async () => {
    const failures: [string, unknown][] = [];
    const work = createBackgroundWork((name, error) => failures.push([name, error]));
    const boom = new Error('database down');
    expect(() =>
      work.run('password reset request', async () => {
        throw boom;
      }),
    ).not.toThrow();
    await work.settled();
    expect(failures).toEqual([['password reset request', boom]]);
  });

  it('settles only once every task, including those started meanwhile, has finished', async () => {
    const work = createBackgroundWork(() => {});
    let finished = 0;
    const later = () =>
      new Promise<void>((resolve) =>
        setTimeout(() => {
          finished += 1;
          resolve();
        }, 20),
      );
    work.run('first', async () => {
      await later();
      work.run('second', later);
    });
    await work.settled();
    expect(finished).toBe(2);
  });

  it('waits the given delay before a task, so that its cost falls on later requests, not on the next one', async () => {
    const work = createBackgroundWork(
      () => {},
      () => 40,
    );
    let ran = false;
    work.run('task', async () => {
      ran = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 15));
    expect(ran).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(ran).toBe(true);
  });

  it('runs delayed tasks at once when asked to settle, so that closing the app never waits for a delay', async () => {
    const work = createBackgroundWork(
      () => {},
      () => 60_000,
    );
    let ran = false;
    work.run('task', async () => {
      ran = true;
    });
    const started = performance.now();
    await work.settled();
    expect(ran).toBe(true);
    expect(performance.now() - started).toBeLessThan(5_000);
  });
});
