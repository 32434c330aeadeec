import type { FastifyBaseLogger } from 'fastify';
import type { FastifyChildLoggerFactory } from 'fastify/types/logger.js';
import type { ChildLoggerOptions } from 'pino';

type Bindings = Record<string, unknown>;
type ChildOptions = Pick<ChildLoggerOptions, 'level' | 'serializers'>;
type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
type Parent = FastifyBaseLogger & { isLevelEnabled(level: string): boolean };

/**
 * A request's logger that makes no pino child unless it must. Fastify makes a child of the app's logger for every
 * request, and pino's child() serialises its bindings at once: most requests log nothing (successes are logged at
 * debug), so that was work for nothing on each of them.
 */
class RequestLogger {
  readonly #parent: Parent;
  readonly #bindings: Bindings;
  readonly #options: ChildOptions;
  #child: Parent | undefined;

  constructor(parent: Parent, bindings: Bindings, options: ChildOptions) {
    this.#parent = parent;
    this.#bindings = bindings;
    this.#options = options;
  }

  #logger(): Parent {
    this.#child ??= this.#parent.child(this.#bindings, this.#options) as Parent;
    return this.#child;
  }

  get level(): string {
    return this.#child?.level ?? this.#options.level ?? this.#parent.level;
  }

  set level(level: string) {
    this.#logger().level = level;
  }

  isLevelEnabled(level: string): boolean {
    if (this.#child === undefined && this.#options.level === undefined)
      return this.#parent.isLevelEnabled(level);
    return this.#logger().isLevelEnabled(level);
  }

  #write(level: Level, args: unknown[]): void {
    if (!this.isLevelEnabled(level)) return;
    const [first, ...rest] = args;
    // A line's bindings merged into its own fields give the child's line key for key, without the child: a request
    // that logs logs one line or two (an answer 4xx, a refusal under a flood), and a child made for them is garbage.
    // An error logged first keeps pino's own handling (its serialiser, its message); a route's level or serialisers
    // need the child.
    const own = this.#options;
    if (
      this.#child === undefined &&
      own.level === undefined &&
      own.serializers === undefined &&
      !(first instanceof Error)
    ) {
      const write = this.#parent[level] as (...values: unknown[]) => void;
      if (typeof first === 'object' && first !== null)
        write.call(this.#parent, { ...this.#bindings, ...first }, ...rest);
      else write.call(this.#parent, this.#bindings, ...args);
      return;
    }
    (this.#logger()[level] as (...values: unknown[]) => void)(...args);
  }

  fatal(...args: unknown[]): void {
    this.#write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.#write('error', args);
  }
  warn(...args: unknown[]): void {
    this.#write('warn', args);
  }
  info(...args: unknown[]): void {
    this.#write('info', args);
  }
  debug(...args: unknown[]): void {
    this.#write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.#write('trace', args);
  }
  silent(): void {}

  child(bindings: Bindings, options?: ChildOptions): FastifyBaseLogger {
    return this.#logger().child(bindings, options);
  }

  bindings(): Bindings {
    return (this.#logger() as unknown as { bindings(): Bindings }).bindings();
  }
}

/** Fastify's `childLoggerFactory`: each request's logger, made only when the request logs. */
export const lazyRequestLogger: FastifyChildLoggerFactory = (logger, bindings, options) =>
  new RequestLogger(logger as Parent, bindings, options as ChildOptions) as unknown as FastifyBaseLogger;

// The scheme and authority of an absolute-form target (RFC 9112 §3.2.2), userinfo included.
const SCHEME_AND_AUTHORITY = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i;

/**
 * The request's path as logged: without the query, a fragment (a client library fetching a mailed link sends its
 * `#token=`) or the scheme and authority of an absolute-form target (which may carry a user and password).
 */
export function loggedPath(target: string): string {
  const path = target.replace(SCHEME_AND_AUTHORITY, '');
  const end = path.search(/[?#]/);
  return (end === -1 ? path : path.slice(0, end)) || '/';
}
