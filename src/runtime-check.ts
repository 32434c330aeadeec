import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseEnv } from 'node:util';

// Imported first by main.ts. npm puts the pinned `node` devDependency (Node 24) first on PATH for every script;
// this stops a run outside npm, or a stale install, from going on with another Node.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(
    `Gatehouse needs Node 24 (found ${process.version}): run it through npm (npm start) after npm ci.`,
  );
  process.exit(1);
}

// libuv reads UV_THREADPOOL_SIZE once, when its threadpool first starts, which is after this line and before
// config.ts runs: the pool must be sized here, from the raw environment (and .env, which main.ts loads only later).
// Room for HASH_CONCURRENCY password hashes and four threads that hashing never takes: WebCrypto (jose's signatures),
// file I/O (the logs), dns.lookup and zlib. An invalid HASH_CONCURRENCY is left to config.ts to report; until then
// the default stands.
function setting(name: string): string | undefined {
  if (process.env[name] !== undefined) return process.env[name];
  try {
    return parseEnv(readFileSync('.env', 'utf8'))[name];
  } catch {
    return undefined;
  }
}
const configured = Number(setting('HASH_CONCURRENCY')?.trim());
const hashConcurrency =
  Number.isInteger(configured) && configured >= 1 && configured <= 1020 ? configured : availableParallelism();
process.env.UV_THREADPOOL_SIZE ??= setting('UV_THREADPOOL_SIZE') ?? String(hashConcurrency + 4);
