import type autocannon from 'autocannon';
import type { Bench, Row } from '../support/context.ts';
import { formHeaders, type RunningGatehouse, registerForTokens, uniqueName } from '../support/gatehouse.ts';
import { measure } from '../support/load.ts';

interface Slot {
  slot?: number;
}

/**
 * The refresh grant on the SQLite server of the /conversation row: each connection rotates a family of its own, as
 * a client does, sending the refresh token the previous answer gave it.
 */
export async function refreshRow(bench: Bench, sqlite: RunningGatehouse): Promise<Row> {
  const latest: string[] = [];
  for (let i = 0; i < bench.connections; i += 1) {
    latest.push((await registerForTokens(sqlite.base, uniqueName())).refreshToken);
  }
  // Slots are handed out again at each autocannon run (the warm-up, then the measurement), so a run continues the
  // families where the previous one left them.
  let next = 0;
  const request: autocannon.Request = {
    method: 'POST',
    headers: formHeaders,
    setupRequest: (request, context: Slot) => {
      context.slot ??= next++ % bench.connections;
      const token = latest[context.slot] ?? '';
      return {
        ...request,
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token }).toString(),
      };
    },
    onResponse: (status, body, context: Slot) => {
      if (status === 200 && context.slot !== undefined) latest[context.slot] = JSON.parse(body).refresh_token;
    },
  };
  const row = await measure(bench, 'Gatehouse POST /token refresh grant, SQLite', sqlite.pid, {
    url: `${sqlite.base}/token`,
    method: 'POST',
    requests: [request],
    connections: bench.connections,
  });
  next = 0;
  return row;
}
