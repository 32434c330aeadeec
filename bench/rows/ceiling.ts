import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { Bench, Row } from '../support/context.ts';
import { measure } from '../support/load.ts';
import { freePort, start, stop, waitFor } from '../support/processes.ts';

/** The ceiling (node:http + jose), and with `unchecked` the stack limit (node:http answering the same JSON). */
export async function ceilingRow(bench: Bench, { unchecked = false } = {}): Promise<Row> {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ceiling', alg: 'EdDSA' };
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ preferred_username: 'benchuser', sid: 'x', scope: 'conversation' })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'ceiling' })
    .setIssuer('http://localhost:8000')
    .setAudience('gatehouse')
    .setSubject('1')
    .setIssuedAt(now)
    .setExpirationTime(now + 900)
    .setJti('ceiling')
    .sign(privateKey);
  const port = await freePort();
  const server = start(bench, process.execPath, ['bench/ceiling.ts'], {
    PORT: String(port),
    CEILING_PUBLIC_JWK: JSON.stringify(jwk),
    CEILING_ISSUER: 'http://localhost:8000',
    CEILING_AUDIENCE: 'gatehouse',
    ...(unchecked ? { CEILING_CHECK: 'none' } : {}),
  });
  const url = `http://127.0.0.1:${port}/conversation`;
  await waitFor(url);
  const name = unchecked ? 'Stack limit: node:http, same JSON, no check' : 'Ceiling: node:http + jose verify';
  const row = await measure(bench, name, server.child.pid as number, {
    url,
    headers: { authorization: `Bearer ${token}` },
  });
  await stop(server.child);
  return row;
}
