#!/usr/bin/env node
// Rebuilds the bundle into a temporary directory and fails if the committed dist/ differs,
// so CI catches a stale dist/pushgate.js (the gateway embeds that exact file).
// Run it on a clean checkout *before* `npm run build` (which would rewrite dist/).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const tmp = mkdtempSync(join(tmpdir(), 'pushgate-dist-'));

let failed = false;
try {
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json'), '--outDir', tmp], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status !== 0) {
    console.error('check-dist: the TypeScript build failed');
    process.exit(r.status || 1);
  }
  const fresh = readdirSync(tmp).sort();
  const committed = existsSync(dist) ? readdirSync(dist).sort() : [];
  for (const name of new Set([...fresh, ...committed])) {
    if (!fresh.includes(name)) {
      console.error(`check-dist: dist/${name} is not produced by the build (remove it)`);
      failed = true;
    } else if (!committed.includes(name)) {
      console.error(`check-dist: dist/${name} is missing`);
      failed = true;
    } else if (!readFileSync(join(tmp, name)).equals(readFileSync(join(dist, name)))) {
      console.error(`check-dist: dist/${name} differs from a fresh build of src/`);
      failed = true;
    }
  }
  if (failed) {
    console.error('check-dist: dist/ is stale; run `npm run build` and commit dist/.');
  } else {
    console.log(`check-dist: dist/ is up to date (${fresh.join(', ')})`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
