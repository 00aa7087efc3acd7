#!/usr/bin/env node
// Runs the compiled CLI when present (container image), else the TypeScript sources directly:
// Node 24 strips erasable type syntax natively, so development needs no build step.
import { existsSync } from 'node:fs';

const compiled = existsSync(new URL('../dist/cli/main.js', import.meta.url));
const module = (name) => new URL(compiled ? `../dist/cli/${name}.js` : `../src/cli/${name}.ts`, import.meta.url).href;
// Stop signals are routed before the rest loads, so one sent during start-up is not lost.
(await import(module('stop-signals'))).installStopSignals();
await import(module('main'));
