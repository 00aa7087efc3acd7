/**
 * Secrets never leave the process. The credentials of the loaded config are registered here
 * once (parseConfig); text that leaves the process from places that may quote them (log lines,
 * error messages, CRM error texts in dead letters) goes through `scrubSecrets`, which replaces:
 *
 * - every registered secret value (CRM tokens, client secrets, refresh tokens, private keys,
 *   passwords, the ops token), also URL-encoded;
 * - credentials a CRM or proxy echoes from a request, whatever their value (an OAuth access token
 *   pg2crm fetched is in no config): `Bearer <x>`, `Zoho-oauthtoken <x>`, `Basic <x>`,
 *   `"access_token":"<x>"` and the like, `client_secret=<x>` in form bodies and query strings;
 * - the user and password of URLs (`postgresql://user:pw@host` -> `postgresql://***@host`).
 */

const MASK = '***';

const registered = new Set<string>();
let ordered: string[] = [];

/** Too short to be a credential, and replacing it would shred ordinary text. */
const MIN_SECRET_CHARS = 8;

/** Keys whose string values are credentials, in the config and in echoed JSON. */
const SECRET_KEY =
  /^(token|password|passphrase|secret|clientSecret|refreshToken|accessToken|privateKey|apiKey|key)$|(Password|Secret|Token|PrivateKey|ApiKey)$/;

/** Adds values to scrub from now on (empty and very short values are ignored). */
export function registerSecrets(values: Iterable<string>): void {
  let added = false;
  for (const v of values) {
    // As written, URL-encoded, and JSON-escaped (a log line is JSON: a `"` or `\` in a secret is escaped there).
    for (const form of [v, encodeURIComponent(v), JSON.stringify(v).slice(1, -1)]) {
      if (form.length >= MIN_SECRET_CHARS && !registered.has(form)) {
        registered.add(form);
        added = true;
      }
      // A PEM key is quoted line by line as often as whole.
      if (form === v && v.includes('\n')) {
        for (const line of v.split(/\r?\n/)) if (line.length >= 16 && !line.startsWith('-----')) registered.add(line.trim());
        added = true;
      }
    }
  }
  // Longest first, so a secret that contains another is replaced whole.
  if (added) ordered = [...registered].sort((a, b) => b.length - a.length);
}

/**
 * Tokens pg2crm fetches while it runs (OAuth access tokens): only the latest few are kept, so a
 * connector refreshing every hour for months neither grows this list nor slows every log line.
 */
const RUNTIME_KEPT = 8;
let runtime: string[] = [];

export function registerRuntimeSecret(value: string): void {
  if (value.length < MIN_SECRET_CHARS || runtime.includes(value)) return;
  runtime = [value, ...runtime].slice(0, RUNTIME_KEPT);
}

/** Forgets every registered secret (tests). */
export function clearSecrets(): void {
  registered.clear();
  ordered = [];
  runtime = [];
}

/**
 * The credentials in a config object (any shape): the values of keys that name a secret
 * (`token`, `password`, `clientSecret`, `refreshToken`, `privateKey`, `*Password`, ...) and the
 * passwords inside URLs (`postgres.url`).
 */
export function secretsOf(value: unknown): string[] {
  return [...new Set(collect(value, ''))];
}

function collect(value: unknown, key: string): string[] {
  if (typeof value === 'string') {
    const out: string[] = [];
    if (key && SECRET_KEY.test(key) && !/Url$|Uri$|File$/.test(key)) out.push(value);
    for (const m of value.matchAll(/\b[a-z][a-z0-9+.-]{0,30}:\/\/[^\s/@:]{0,256}:([^\s/@]{1,1024})@/gi)) {
      out.push(m[1]!);
      try {
        out.push(decodeURIComponent(m[1]!));
      } catch {
        // not percent-encoded: the raw form is enough
      }
    }
    return out;
  }
  if (Array.isArray(value)) return value.flatMap((v) => collect(v, key));
  if (value !== null && typeof value === 'object') return Object.entries(value).flatMap(([k, v]) => collect(v, k));
  return [];
}

/** `scheme://user:password@host` -> `scheme://***@host` (also `scheme://user@` is kept as is). */
export function redactUrls(text: string): string {
  // Bounded and anchored at a word start: a long run of letters must not make this quadratic.
  return text.replace(/\b([a-z][a-z0-9+.-]{0,30}:\/\/)[^\s/@:'"]{0,256}:[^\s/@'"]{0,1024}@/gi, `$1${MASK}@`);
}

const ECHOED: [RegExp, string][] = [
  // Authorization header values after the header's name, whatever the scheme (`Basic x`, `OAuth x`, ...).
  [/\b(authorization["']?\s*[:=]\s*["']?[A-Za-z-]+(?:\s+|%20|\+))[A-Za-z0-9._~+/=-]{4,}/gi, `$1${MASK}`],
  // Bearer and Zoho tokens quoted without the header's name. `Basic` and `OAuth` alone are
  // ordinary words ("Basic authentication failed", "OAuth client_credentials"): not here.
  [/\b(Bearer|Zoho-oauthtoken)(\s+|%20|\+)[A-Za-z0-9._~+/=-]{6,}/g, `$1$2${MASK}`],
  // JSON members: "access_token": "x", "authorization": "Bearer x", "client_secret": "x", ...
  [
    /("(?:access_token|refresh_token|id_token|client_secret|client_assertion|assertion|password|authorization|token|api_key|apiKey|secret)"\s*:\s*")(?:[^"\\]|\\.)*"/gi,
    `$1${MASK}"`,
  ],
  // Form bodies and query strings: client_secret=x&...
  [
    /\b(access_token|refresh_token|id_token|client_secret|client_assertion|assertion|password|api_key|apikey|token)=[^&\s"'<>]+/gi,
    `$1=${MASK}`,
  ],
];

/** The text without any registered secret, echoed credential or URL password. */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const s of ordered) if (out.includes(s)) out = out.split(s).join(MASK);
  for (const s of runtime) if (out.includes(s)) out = out.split(s).join(MASK);
  for (const [re, to] of ECHOED) out = out.replace(re, to);
  return redactUrls(out);
}

/** Scrubbed, then at most `max` characters (with how long it was). */
export function scrubAndCap(text: string, max: number): string {
  const clean = scrubSecrets(text);
  return clean.length <= max ? clean : `${clean.slice(0, max)}… (${clean.length} characters, cut)`;
}
