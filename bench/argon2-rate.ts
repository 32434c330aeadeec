// Raw argon2id verifications per second with Gatehouse's parameters, on every core, straight from @node-rs/argon2.
import { availableParallelism } from 'node:os';
import { hash, verify } from '@node-rs/argon2';

const seconds = Number(process.argv[2] ?? 5);
const options = {
  memoryCost: Number(process.env.ARGON2_MEMORY_KIB ?? 19456),
  timeCost: Number(process.env.ARGON2_TIME_COST ?? 2),
  parallelism: Number(process.env.ARGON2_PARALLELISM ?? 1),
};
const stored = await hash('correct horse battery staple', options);
const workers = availableParallelism();
let done = 0;
const deadline = performance.now() + seconds * 1000;
const start = performance.now();
const cpuBefore = process.cpuUsage();
await Promise.all(
  Array.from({ length: workers }, async () => {
    while (performance.now() < deadline) {
      await verify(stored, 'correct horse battery staple');
      done += 1;
    }
  }),
);
const elapsed = (performance.now() - start) / 1000;
const cpu = process.cpuUsage(cpuBefore);
console.log(
  JSON.stringify({
    verifiesPerSecond: done / elapsed,
    cpuMsPerVerify: (cpu.user + cpu.system) / 1000 / done,
    // The kernel's share: @node-rs/argon2 maps each hash's memory afresh, and every page of it is zeroed again.
    systemCpuMsPerVerify: cpu.system / 1000 / done,
    workers,
    verifies: done,
    seconds: elapsed,
  }),
);
