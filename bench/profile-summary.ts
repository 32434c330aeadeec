// node bench/profile-summary.ts FILE.cpuprofile [N]: where a --cpu-prof profile spends its samples, by package
// and by function (self time), so that a benchmark row can be explained rather than guessed at.
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, top = '25'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/profile-summary.ts FILE.cpuprofile [N]');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const selfByFunction = new Map<string, number>();
const selfByPackage = new Map<string, number>();
let total = 0;
profile.samples.forEach((id, index) => {
  const micros = profile.timeDeltas[index] ?? 0;
  const frame = byId.get(id)?.callFrame;
  if (!frame) return;
  total += micros;
  const url = frame.url;
  const pkg =
    url === ''
      ? frame.functionName === '(idle)'
        ? '(idle)'
        : frame.functionName === '(garbage collector)'
          ? '(garbage collector)'
          : '(native / program)'
      : url.includes('node_modules/')
        ? (url
            .split('node_modules/')
            .pop()
            ?.split('/')
            .slice(0, url.includes('node_modules/@') ? 2 : 1)
            .join('/') ?? url)
        : url.startsWith('node:')
          ? 'node core'
          : url.includes('/src/')
            ? `gatehouse ${url.slice(url.indexOf('/src/') + 1)}`
            : url;
  const name = `${frame.functionName || '(anonymous)'} ${url.split('/').slice(-2).join('/')}:${frame.lineNumber + 1}`;
  selfByFunction.set(name, (selfByFunction.get(name) ?? 0) + micros);
  selfByPackage.set(pkg, (selfByPackage.get(pkg) ?? 0) + micros);
});
const print = (title: string, entries: Map<string, number>, limit: number) => {
  console.log(`\n${title}`);
  for (const [name, micros] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, limit)) {
    console.log(`${((micros / total) * 100).toFixed(1).padStart(5)}%  ${name}`);
  }
};
console.log(`${(total / 1e6).toFixed(1)} s of samples`);
print('self time by package', selfByPackage, 20);
print('self time by function', selfByFunction, Number(top));
