import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { type Bench, log, type Row } from '../support/context.ts';
import { formHeaders, registerAndLogin, registerBody, tokenForm } from '../support/gatehouse.ts';
import { measure } from '../support/load.ts';
import { freePort, start, stop, waitFor } from '../support/processes.ts';

function seedAvailable(root: string): string | undefined {
  const runSh = resolve(root, 'test/fixtures/reference-fastapi/run.sh');
  if (!existsSync(runSh)) return undefined;
  try {
    execFileSync(
      '/usr/bin/python3',
      ['-c', 'import fastapi, uvicorn, jose, passlib, sqlalchemy, multipart'],
      {
        stdio: 'ignore',
      },
    );
    return runSh;
  } catch {
    return undefined;
  }
}

/** The FastAPI seed's /conversation, /token and /register/ when it can run here; its rows are skipped otherwise. */
export async function seedRows(bench: Bench): Promise<{ conversation?: Row; token?: Row }> {
  const seedScript = seedAvailable(bench.root);
  if (!seedScript) {
    log(
      'FastAPI seed skipped: its Debian packages are missing (see test/fixtures/reference-fastapi/README.md)',
    );
    return {};
  }
  const port = await freePort();
  const seed = start(bench, 'bash', [seedScript, String(port)], { TMPDIR: bench.work });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/docs`);
  const token = await registerAndLogin(base, 'benchuser');
  const pid = seed.child.pid as number;
  const conversation = await measure(bench, 'FastAPI seed GET /conversation', pid, {
    url: `${base}/conversation`,
    headers: { authorization: `Bearer ${token}` },
  });
  const tokenRow = await measure(bench, 'FastAPI seed POST /token', pid, {
    url: `${base}/token`,
    method: 'POST',
    headers: formHeaders,
    body: tokenForm,
    connections: 8,
  });
  await measure(bench, 'FastAPI seed POST /register/', pid, {
    url: `${base}/register/`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    setupBody: registerBody,
    connections: 8,
  });
  await stop(seed.child);
  return { conversation, token: tokenRow };
}
