import type { Bench } from '../support/context.ts';
import { registerAndLogin, startGatehouse, uniqueName } from '../support/gatehouse.ts';
import { measure } from '../support/load.ts';
import { stop } from '../support/processes.ts';

export async function workersRow(bench: Bench, sqliteUrl: string) {
  const clustered = await startGatehouse(bench, sqliteUrl, { WORKERS: '2' });
  const clusteredToken = await registerAndLogin(clustered.base, uniqueName());
  await measure(bench, 'Gatehouse GET /conversation, SQLite, WORKERS=2', clustered.pid, {
    url: `${clustered.base}/conversation`,
    headers: { authorization: `Bearer ${clusteredToken}` },
  });
  await stop(clustered.child);
}
