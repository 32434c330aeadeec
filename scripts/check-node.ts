// npm puts the pinned `node` devDependency first on PATH for every script; this guards against a
// run outside npm (or a stale install) silently using the machine's older Node.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(
    `Gatehouse needs Node 24 (found ${process.version}). Run it through npm (npm start, npm test) after npm ci.`,
  );
  process.exit(1);
}
