import { availableParallelism } from 'node:os';

// Imported first by main.ts. npm puts the pinned `node` devDependency (Node 24) first on PATH for every script;
// this stops a run outside npm, or a stale install, from going on with another Node.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(
    `Gatehouse needs Node 24 (found ${process.version}): run it through npm (npm start) after npm ci.`,
  );
  process.exit(1);
}

// Read by libuv when its threadpool first starts, which is after this line: room for one password hash per core
// and two threads that hashing never takes (token signing, file I/O).
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() + 2));
