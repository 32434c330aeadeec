// The physical limit of the hot path: node:http, one jose verification of the same EdDSA access token with the
// same pinned options, the same JSON answer. No framework, no database, no logging. With CEILING_CHECK=none, the
// stack's own limit: the same answer with no check at all (issue 15's "stack limit" row).
import { createServer } from 'node:http';
import { importJWK, jwtVerify } from 'jose';

const publicJwk = JSON.parse(process.env.CEILING_PUBLIC_JWK ?? '');
const key = await importJWK(publicJwk, 'EdDSA');
const options = {
  algorithms: ['EdDSA'],
  issuer: process.env.CEILING_ISSUER ?? '',
  audience: process.env.CEILING_AUDIENCE ?? '',
  typ: 'at+jwt',
};

const unchecked = JSON.stringify({
  conversation: 'This is a secure conversation',
  current_user: 'benchuser',
});

const server = createServer(async (request, response) => {
  if (process.env.CEILING_CHECK === 'none') {
    response.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
    });
    response.end(unchecked);
    return;
  }
  const header = request.headers.authorization ?? '';
  try {
    const { payload } = await jwtVerify(header.slice(7), key, options);
    const body = JSON.stringify({
      conversation: 'This is a secure conversation',
      current_user: payload.preferred_username,
    });
    response.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'no-store',
    });
    response.end(body);
  } catch {
    response.writeHead(401, {
      'content-type': 'application/json',
      'www-authenticate': 'Bearer error="invalid_token"',
    });
    response.end('{"detail":"Could not validate credentials"}');
  }
});
server.listen(Number(process.env.PORT), '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
