/**
 * The command line that reproduces a bench run, for its BENCH_RESULT: `npm run <script> -- <args>`
 * without `--json-out` (where the result went is not part of how it was measured).
 */
export function benchCommand(script: string, argv: readonly string[] = process.argv.slice(2)): string {
  const kept: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--json-out') {
      i++;
      continue;
    }
    if (a.startsWith('--json-out=')) continue;
    kept.push(/^[\w.,:/=@%+-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`);
  }
  return kept.length ? `npm run ${script} -- ${kept.join(' ')}` : `npm run ${script}`;
}
