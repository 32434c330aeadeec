import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { lazyRequestLogger } from '../../src/http/request-logger.ts';
import { LOG_SECRET_KEYS, logRedaction } from '../../src/security/log-redaction.ts';

function capture() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(JSON.parse(String(chunk)));
      callback();
    },
  });
  return { lines, logger: pino({ level: 'info', ...logRedaction }, stream) };
}

describe('log redaction', () => {
  it('censors every secret key at the top level, whatever the value', () => {
    const { lines, logger } = capture();
    logger.info(Object.fromEntries(LOG_SECRET_KEYS.map((key) => [key, `value of ${key}`])), 'all of them');
    for (const key of LOG_SECRET_KEYS) expect(lines[0]?.[key], key).toBe('[redacted]');
    expect(JSON.stringify(lines)).not.toContain('value of');
  });

  it('censors them nested in objects and arrays, as a request body or headers would carry them', () => {
    const { lines, logger } = capture();
    logger.warn(
      {
        body: { username: 'alice', password: 'hunter2', nested: { refresh_token: 'r.t' } },
        req: { headers: { authorization: 'Bearer abc', cookie: 'c=1', host: 'x' } },
        list: [{ otp: '123456' }, 'plain'],
      },
      'nested',
    );
    expect(lines[0]).toMatchObject({
      body: { username: 'alice', password: '[redacted]', nested: { refresh_token: '[redacted]' } },
      req: { headers: { authorization: '[redacted]', cookie: '[redacted]', host: 'x' } },
      list: [{ otp: '[redacted]' }, 'plain'],
    });
  });

  it("censors an error's own secret properties, keeping its message and type", () => {
    const { lines, logger } = capture();
    const error = Object.assign(new Error('boom'), { token: 'mailed-token', code: 'E_X' });
    logger.error({ err: error }, 'failed');
    expect(lines[0]?.err).toMatchObject({ type: 'Error', message: 'boom', code: 'E_X', token: '[redacted]' });
  });

  it("censors a request's line, its request id merged into it", () => {
    const { lines, logger } = capture();
    const requestLog = lazyRequestLogger.call(
      undefined as never,
      logger,
      { reqId: 'r-1' },
      {},
      undefined as never,
    );
    requestLog.info({ token: 'mailed-token', path: '/email/verify' }, 'request');
    expect(lines[0]).toMatchObject({ reqId: 'r-1', token: '[redacted]', path: '/email/verify' });
  });

  it('leaves a line without secrets as it is, object for object', () => {
    const line = { reqId: 'r-1', method: 'POST', path: '/token', status: 400, nested: { a: 1 } };
    expect(logRedaction.formatters.log(line)).toBe(line);
  });
});
