#!/usr/bin/env node
// Runs the compiled CLI when present (container image), else the TypeScript sources directly:
// Node 24 strips erasable type syntax natively, so development needs no build step.
import { existsSync } from 'node:fs';
const compiled = new URL('../dist/cli/main.js', import.meta.url);
await import(existsSync(compiled) ? compiled.href : new URL('../src/cli/main.ts', import.meta.url).href);
