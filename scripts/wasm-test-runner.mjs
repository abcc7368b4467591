// Cargo runner for wasm32-wasip1 test binaries: runs them in Node's built-in
// WASI (V8, the same engine Envoy uses for the filter), so the core's unit
// tests also run as WebAssembly without downloading a wasm runtime.
//
// The test binary runs in a child node process. Node's own V8 has been seen
// to abort in its garbage collector while a test grows wasm memory (a fatal
// error inside node, not a test failure): a child killed by a signal is run
// once more, and the crash is reported. A test that fails exits normally
// with a non-zero status and is never retried.
import { readFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WASI } from 'node:wasi';
import process from 'node:process';

const argv = process.argv.slice(2);
if (argv[0] === '--child') {
  const [file, ...args] = argv.slice(1);
  const wasi = new WASI({
    version: 'preview1',
    args: [file, ...args],
    env: process.env,
    // Tests may read fixtures by absolute path.
    preopens: { '/': '/' },
    returnOnExit: true,
  });
  const module = await WebAssembly.compile(await readFile(file));
  const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
  process.exit(wasi.start(instance));
} else {
  const self = fileURLToPath(import.meta.url);
  for (let attempt = 1; ; attempt++) {
    const r = spawnSync(process.execPath, ['--no-warnings', self, '--child', ...argv],
                        { stdio: 'inherit' });
    if (r.signal && attempt < 2) {
      console.error(`wasm-test-runner: node died with ${r.signal} (a V8 crash, not a test `
                    + 'result); running the test binary once more');
      continue;
    }
    if (r.signal) {
      console.error(`wasm-test-runner: node died with ${r.signal} again`);
      process.exit(1);
    }
    process.exit(r.status ?? 1);
  }
}
