// Cargo runner for wasm32-wasip1 test binaries: runs them in Node's built-in
// WASI (V8, the same engine Envoy uses for the filter), so the core's unit
// tests also run as WebAssembly without downloading a wasm runtime.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [file, ...args] = process.argv.slice(2);
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
