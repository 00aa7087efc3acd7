import { constants } from 'node:os';

/**
 * SIGTERM/SIGINT routing. The listeners are installed first thing (bin/pg2crm.js), before the
 * CLI's modules load, and stay for the life of the process; commands only swap the handler.
 * Removing and re-adding listeners instead would lose a signal that arrived during start-up:
 * it is queued for the listeners present when the event loop gets to it.
 */
type StopHandler = (signal: NodeJS.Signals) => void;

/** Until a command says otherwise, nothing has started: exit as a signalled process would. */
let handler: StopHandler = (signal) => process.exit(128 + constants.signals[signal]);
let installed = false;

export function installStopSignals(): void {
  if (installed) return;
  installed = true;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, (s) => handler(s));
}

export function onStopSignal(next: StopHandler): void {
  handler = next;
}
