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
});
