import { describe, expect, it } from 'vitest';
import { batchedReads } from '../../src/db/prepared.ts';

interface Row {
  key: string;
  value: number;
}

// The statement is the caller's; here a function that records the keys of each call stands in for it.
function recordingRead(rows: Row[]) {
  const calls: string[][] = [];
  const read = async (keys: string[]) => {
    calls.push([...keys]);
    return rows.filter((row) => keys.includes(row.key));
  };
  return { calls, read };
}

describe('batched reads', () => {
  it('answers the reads of one turn of the event loop with one statement, each with its own rows', async () => {
    const { calls, read } = recordingRead([
      { key: 'a', value: 1 },
      { key: 'b', value: 2 },
      { key: 'b', value: 3 },
    ]);
    const byKey = batchedReads(read, (row: Row) => row.key);
    const answers = await Promise.all([byKey('a'), byKey('b'), byKey('c'), byKey('a')]);
    expect(calls).toEqual([['a', 'b', 'c']]);
    expect(answers).toEqual([
      [{ key: 'a', value: 1 }],
      [
        { key: 'b', value: 2 },
        { key: 'b', value: 3 },
      ],
      [],
      [{ key: 'a', value: 1 }],
    ]);
  });

  it('reads again for a request that comes after the statement went out: it sees what was committed since', async () => {
    const rows: Row[] = [{ key: 'a', value: 1 }];
    const { calls, read } = recordingRead(rows);
    const byKey = batchedReads(read, (row: Row) => row.key);
    const first = byKey('a');
    await new Promise((resolve) => setImmediate(resolve));
    rows[0] = { key: 'a', value: 2 };
    expect(await byKey('a')).toEqual([{ key: 'a', value: 2 }]);
    expect(await first).toEqual([{ key: 'a', value: 1 }]);
    expect(calls).toEqual([['a'], ['a']]);
  });

  it('splits a large batch into statements of at most maxKeys keys', async () => {
    const { calls, read } = recordingRead([]);
    const byKey = batchedReads(read, (row: Row) => row.key, 3);
    await Promise.all(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map(byKey));
    expect(calls).toEqual([['a', 'b', 'c'], ['d', 'e', 'f'], ['g']]);
  });

  it('rejects every read of a failed statement with its error, and only those', async () => {
    const failure = new Error('database unavailable');
    let calls = 0;
    const byKey = batchedReads(
      async (keys: string[]) => {
        calls += 1;
        if (keys.includes('bad')) throw failure;
        return keys.map((key) => ({ key, value: 0 }));
      },
      (row: Row) => row.key,
      2,
    );
    const results = await Promise.allSettled([byKey('x'), byKey('bad'), byKey('y')]);
    expect(calls).toBe(2);
    expect(results).toEqual([
      { status: 'rejected', reason: failure },
      { status: 'rejected', reason: failure },
      { status: 'fulfilled', value: [{ key: 'y', value: 0 }] },
    ]);
  });

  it('refuses a batch size that would never send a statement', () => {
    for (const maxKeys of [0, -1, 1.5, Number.NaN]) {
      expect(() =>
        batchedReads(
          async () => [],
          (row: Row) => row.key,
          maxKeys,
        ),
      ).toThrow(/maxKeys/);
    }
  });

  it('turns an error thrown before the statement starts into rejections, not an uncaught exception', async () => {
    const failure = new Error('cannot build the statement');
    const byKey = batchedReads(
      (): Promise<Row[]> => {
        throw failure;
      },
      (row: Row) => row.key,
    );
    await expect(byKey('a')).rejects.toBe(failure);
  });
});
