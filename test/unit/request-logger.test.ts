import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { lazyRequestLogger } from '../../src/http/request-logger.ts';

function capture(level = 'info') {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(JSON.parse(String(chunk)));
      callback();
    },
  });
  const logger = pino({ level, redact: { paths: ['password'], censor: '[redacted]' } }, stream);
  let children = 0;
  const counted = Object.assign(Object.create(logger), {
    child(...args: Parameters<typeof logger.child>) {
      children += 1;
      return logger.child(...args);
    },
  }) as typeof logger;
  return { lines, logger: counted, children: () => children };
}

const make = (parent: ReturnType<typeof capture>['logger'], options = {}) =>
  lazyRequestLogger.call(undefined as never, parent, { reqId: 'r-1' }, options, undefined as never);

describe('the request logger', () => {
  it('makes no child for a request that logs nothing, or only below the level', () => {
    const log = capture('info');
    const logger = make(log.logger);
    logger.debug({ a: 1 }, 'hidden');
    expect(logger.level).toBe('info');
    expect(log.children()).toBe(0);
    expect(log.lines).toEqual([]);
  });

  it("writes lines with the request id, through the redaction, from the app's logger without a child", () => {
    const log = capture('info');
    const logger = make(log.logger);
    logger.info({ password: 'hunter2' }, 'first');
    logger.warn('second');
    logger.info({ n: 1 }, 'count %d of %s', 2, 'three');
    expect(log.children()).toBe(0);
    expect(log.lines.map((line) => [line.level, line.reqId, line.msg, line.password])).toEqual([
      [30, 'r-1', 'first', '[redacted]'],
      [40, 'r-1', 'second', undefined],
      [30, 'r-1', 'count 2 of three', undefined],
    ]);
    expect(log.lines[2]?.n).toBe(1);
  });

  it('writes the same line as a pino child would, key for key', () => {
    const viaChild = capture('info');
    viaChild.logger.child({ reqId: 'r-1' }).warn({ code: 'overloaded', ip: '::1' }, 'refused');
    const viaRequest = capture('info');
    make(viaRequest.logger).warn({ code: 'overloaded', ip: '::1' }, 'refused');
    const withoutTime = (line: Record<string, unknown> | undefined) =>
      Object.entries(line ?? {}).filter(([key]) => key !== 'time');
    expect(withoutTime(viaRequest.lines[0])).toEqual(withoutTime(viaChild.lines[0]));
  });

  it("keeps pino's error serialisation for an error logged first", () => {
    const log = capture('info');
    make(log.logger).error(new Error('boom'), 'failed');
    expect(log.lines[0]).toMatchObject({
      reqId: 'r-1',
      msg: 'failed',
      err: { message: 'boom', type: 'Error' },
    });
  });

  it("honours a route's own level", () => {
    const log = capture('info');
    const logger = make(log.logger, { level: 'warn' });
    logger.info('quiet route');
    logger.error('loud');
    expect(log.lines.map((line) => line.msg)).toEqual(['loud']);
  });

  it("honours a route's own serialisers, through a child", () => {
    const log = capture('info');
    make(log.logger, { serializers: { secretish: () => 'serialised' } }).info(
      { secretish: 1 },
      'with its own',
    );
    expect(log.children()).toBe(1);
    expect(log.lines[0]).toMatchObject({ reqId: 'r-1', secretish: 'serialised' });
  });

  it('gives children the request id too', () => {
    const log = capture('info');
    make(log.logger).child({ part: 'x' }).info('from a child');
    expect(log.lines[0]).toMatchObject({ reqId: 'r-1', part: 'x', msg: 'from a child' });
  });
});
