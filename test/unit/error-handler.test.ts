import { describe, expect, it } from 'vitest';
import { toAppError } from '../../src/http/error-handler.ts';

/** What http-errors builds for `createError(status)`: a named class with `status`, `statusCode` and `expose`, no `code`. */
function httpError(status: number, name: string): Error {
  return Object.assign(new Error(name), { name, status, statusCode: status, expose: status < 500 });
}

describe('error mapping', () => {
  it('does not read a 4xx from http-errors outside the documentation scope as an unknown path', () => {
    expect(toAppError(httpError(400, 'BadRequestError')).code).not.toBe('not_found');
    expect(toAppError(httpError(403, 'ForbiddenError')).code).not.toBe('not_found');
  });

  it('maps an http-errors 5xx to internal', () => {
    expect(toAppError(httpError(500, 'InternalServerError')).code).toBe('internal');
  });

  it('maps a database that does not answer, refuses connections or is locked to service_unavailable', () => {
    const outages = [
      new Error('Query read timeout'),
      new Error('timeout exceeded when trying to connect'),
      new Error('Connection terminated unexpectedly'),
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
      Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }),
      Object.assign(new Error('database is locked'), { code: 'ERR_SQLITE_ERROR', errcode: 5 }),
    ];
    for (const outage of outages) expect(toAppError(outage).code, outage.message).toBe('service_unavailable');
  });

  it('keeps other SQLite errors internal', () => {
    const error = Object.assign(new Error('no such table: users'), { code: 'ERR_SQLITE_ERROR', errcode: 1 });
    expect(toAppError(error).code).toBe('internal');
  });
});
