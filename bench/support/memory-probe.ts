// Preloaded by `node bench/memory.ts --probe` through NODE_OPTIONS (--import) to see inside the server without
// --inspect: every 200 ms the server process overwrites the file named by GATEHOUSE_MEMORY_PROBE with
// process.memoryUsage() and V8's heap space sizes. npm, which reads NODE_OPTIONS too, is left alone.
import { writeFileSync } from 'node:fs';
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';

const file = process.env.GATEHOUSE_MEMORY_PROBE;
if (file && process.argv.some((arg) => arg.endsWith('src/main.ts'))) {
  // --trace-gc is refused in NODE_OPTIONS, not at run time.
  if (process.env.GATEHOUSE_TRACE_GC) setFlagsFromString('--trace-gc');
  // V8 flags that NODE_OPTIONS refuses, to try one before putting it in package.json's start script.
  for (const flag of (process.env.GATEHOUSE_V8_FLAGS ?? '').split(' ').filter(Boolean))
    setFlagsFromString(flag);
  setInterval(() => {
    const spaces = Object.fromEntries(
      getHeapSpaceStatistics().map((space) => [space.space_name, space.space_size]),
    );
    writeFileSync(file, JSON.stringify({ ...process.memoryUsage(), spaces, heap: getHeapStatistics() }));
  }, 200).unref();
}
