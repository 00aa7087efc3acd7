/**
 * kafkajs 2.2.4 (the last release) schedules its request queue's throttle check with
 * `setTimeout(fn, this.throttledUntil - Date.now())`, and `throttledUntil` starts at -1
 * (node_modules/kafkajs/src/network/requestQueue/index.js, scheduleCheckPendingRequests), so
 * the first response of every client asks for a delay of about -Date.now() ms. Node 23+ clamps
 * it to 1 ms (what kafkajs meant: check again at once) and prints a TimeoutNegativeWarning once
 * per process. Harmless, and the only noise on a healthy start: this drops exactly that warning
 * (named TimeoutNegativeWarning and raised from kafkajs's request queue) and lets every other
 * warning, a negative timeout of pg2crm's own included, reach Node's printer as before.
 */
let installed = false;

export function isKafkajsTimerWarning(warning: Error): boolean {
  return warning.name === 'TimeoutNegativeWarning' && /kafkajs[\\/]src[\\/]network[\\/]requestQueue[\\/]/.test(warning.stack ?? '');
}

export function dropKafkajsTimerWarning(): void {
  if (installed) return;
  installed = true;
  const printers = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    if (isKafkajsTimerWarning(warning)) return;
    for (const print of printers) print.call(process, warning);
  });
}
