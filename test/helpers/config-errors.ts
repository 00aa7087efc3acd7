import { parseConfig } from '../../src/config.ts';

/** The message parseConfig refuses `raw` with; throws when the config is accepted. */
export function errorOf(raw: unknown): string {
  try {
    parseConfig(raw, {});
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('config was accepted');
}
