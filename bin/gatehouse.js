#!/usr/bin/env node
// `npx gatehouse` and `npm run gatehouse --` put the project's pinned Node 24 (the `node` devDependency) first on PATH.
// Started some other way with another Node (an older system one cannot even read src/main.ts), this re-runs the same
// command with that pinned Node when `npm ci` installed it; src/runtime-check.ts explains what to do when it did not.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));

// The same cache as npm start's (Node keeps one per set of V8 flags): a command then starts without compiling every
// module again, and without loading Node's TypeScript stripper. An unwritable directory only leaves it off.
const compileCache = fileURLToPath(new URL('../node_modules/.cache/node-compile', import.meta.url));

if (Number(process.versions.node.split('.')[0]) === 24) {
  module.enableCompileCache(compileCache);
  await import(main);
} else if (existsSync(pinned)) {
  const run = spawnSync(pinned, [main, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { NODE_COMPILE_CACHE: compileCache, ...process.env },
  });
  if (run.signal) process.kill(process.pid, run.signal);
  process.exit(run.status ?? 1);
} else {
  console.error(
    `Gatehouse needs Node 24 (found ${process.version}): run it through npm (npx gatehouse, npm start) after npm ci.`,
  );
  process.exit(1);
}
