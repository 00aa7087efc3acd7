import { ConnectorError, errorMessage } from '../errors.ts';

/**
 * The one line an operator reads when a command gives up: `pg2crm: <what>; <fix>` on stderr.
 * The JSON log (stdout) has the details; this line is what a terminal, `docker logs` or a
 * systemd journal shows first, and what a wrapper script can grep.
 */
export function fatalLine(err: unknown): string {
  let text = errorMessage(err)
    .replace(/\s*\n\s*/g, '; ')
    .trim();
  if (!(err instanceof ConnectorError) && !text.includes('; ')) {
    // A failure no pg2crm code has explained: say where to look rather than nothing.
    const name = (err as { name?: unknown } | null)?.name;
    text +=
      typeof name === 'string' && name.startsWith('KafkaJS')
        ? '; check kafka.brokers and the kafka.* settings, and that the brokers run (pg2crm check --config <file> tests them)'
        : '; see the log lines above, and run pg2crm check --config <file> to test every dependency';
  }
  return `pg2crm: ${text}`;
}

/** Writes the fatal line; the caller exits. */
export function reportFatal(err: unknown): void {
  process.stderr.write(`${fatalLine(err)}\n`);
}
