import { describe, expect, it } from 'vitest';
import { AppError, type UnavailableReason } from '../../src/errors.ts';
import { isPacedRefusal, toAppError } from '../../src/http/error-handler.ts';

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

describe('refusals the pacer may hold', () => {
  const shed = (reason: UnavailableReason) =>
    new AppError('overloaded', 'The server is busy; retry in a second.', { unavailableReason: reason });

  it('holds the refusals answered at once (throttling, a full queue, a stalled loop), not those that waited', () => {
    expect(isPacedRefusal(new AppError('temporarily_unavailable', 'R5: too many requests'))).toBe(true);
    expect(isPacedRefusal(shed('hash_queue_full'))).toBe(true);
    expect(isPacedRefusal(shed('overloaded'))).toBe(true);
    expect(isPacedRefusal(shed('password_check_unavailable'))).toBe(true);
    expect(isPacedRefusal(shed('hash_queue_timeout'))).toBe(false);
    expect(
      isPacedRefusal(
        new AppError('service_unavailable', 'The breach check is unavailable', {
          unavailableReason: 'password_check_unavailable',
        }),
      ),
    ).toBe(false);
  });
});
