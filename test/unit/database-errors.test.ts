import { describe, expect, it } from 'vitest';
import { translateDatabaseError } from '../../src/db/database-errors.ts';
import { AppError } from '../../src/errors.ts';

const codeOf = (error: unknown) => (error instanceof AppError ? error.code : undefined);

describe('database error translation', () => {
  it('turns a database that does not answer, refuses connections or is locked into service_unavailable', () => {
    const outages = [
      new Error('Query read timeout'),
      new Error('timeout exceeded when trying to connect'),
      new Error('Connection terminated unexpectedly'),
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
      Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }),
      Object.assign(new Error('database is locked'), { code: 'ERR_SQLITE_ERROR', errcode: 5 }),
      Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
      Object.assign(new Error('database "x" is not currently accepting connections'), { code: '55000' }),
      Object.assign(new Error('database "x" does not exist'), { code: '3D000' }),
      Object.assign(new Error('connection failure'), { code: '08006' }),
      new Error('Client has encountered a connection error and is not queryable'),
    ];
    for (const outage of outages) {
      const translated = translateDatabaseError(outage);
      expect(codeOf(translated), outage.message).toBe('service_unavailable');
      expect((translated as AppError).cause).toBe(outage);
    }
  });

  it('turns a PostgreSQL data exception (class 22) into unstorable_value', () => {
    const nul = Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), {
      code: '22021',
      severity: 'ERROR',
    });
    expect(codeOf(translateDatabaseError(nul))).toBe('unstorable_value');
  });

  it('turns a broken foreign key (a write for an account deleted meanwhile) into account_gone', () => {
    const broken = [
      Object.assign(new Error('insert or update on table "mfa_factors" violates foreign key constraint'), {
        code: '23503',
        severity: 'ERROR',
      }),
      Object.assign(new Error('FOREIGN KEY constraint failed'), { code: 'ERR_SQLITE_ERROR', errcode: 787 }),
    ];
    for (const error of broken) {
      const translated = translateDatabaseError(error);
      expect(codeOf(translated), error.message).toBe('account_gone');
      expect((translated as AppError).cause).toBe(error);
    }
  });

  it('leaves other errors as they are, unique violations included, for the repository to read', () => {
    const others = [
      Object.assign(new Error('no such table: users'), { code: 'ERR_SQLITE_ERROR', errcode: 1 }),
      Object.assign(new Error('duplicate key value violates unique constraint'), {
        code: '23505',
        severity: 'ERROR',
        constraint: 'users_username_canonical_key',
      }),
      Object.assign(new Error('UNIQUE constraint failed: users.email_canonical'), {
        code: 'ERR_SQLITE_ERROR',
        errcode: 2067,
      }),
      // A class-22-looking code without PostgreSQL's severity is not PostgreSQL's, nor is a 23503-looking one.
      Object.assign(new Error('something'), { code: '22001' }),
      Object.assign(new Error('something'), { code: '23503' }),
    ];
    for (const other of others) expect(translateDatabaseError(other)).toBe(other);
  });

  it('keeps an error already translated', () => {
    const error = new AppError('service_unavailable', 'down');
    expect(translateDatabaseError(error)).toBe(error);
  });
});
