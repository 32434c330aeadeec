// Imported first by main.ts. npm puts the pinned `node` devDependency (Node 24) first on PATH for every script;
// this stops a run outside npm, or a stale install, from going on with another Node.
const major = Number(process.versions.node.split('.')[0]);
if (major !== 24) {
  console.error(
    `Gatehouse needs Node 24 (found ${process.version}): run it through npm (npm start) after npm ci.`,
  );
  process.exit(1);
}
