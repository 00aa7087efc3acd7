import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConnectorError } from '../../../src/errors.ts';
import { AvroCodec } from '../../../src/events/avro-codec.ts';

/**
 * kafka.schemaRegistry.username/password (issue 12 §1): the codec sends basic auth on both of
 * its paths (the registry client that registers, the plain GET that fetches a schema by id), and a
 * 401 is an error naming the settings: permanent when registering (the source stops), retriable
 * when decoding (the sink waits instead of dead-lettering a message that is fine).
 */
let server: Server;
let url: string;
const seen: (string | undefined)[] = [];
const SCHEMA = JSON.stringify({ type: 'record', name: 'R', fields: [{ name: 'ok', type: 'boolean' }] });

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    if (req.headers.authorization !== `Basic ${Buffer.from('key:secret').toString('base64')}`) {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"error_code":401,"message":"Unauthorized"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/vnd.schemaregistry.v1+json' });
    // Confluent's API: GET /schemas/ids/{id}, GET /config/{subject}, POST /subjects/{subject}/versions.
    if (req.url?.startsWith('/schemas/ids/')) res.end(JSON.stringify({ schema: SCHEMA }));
    else if (req.url?.startsWith('/config/')) res.end(JSON.stringify({ compatibilityLevel: 'NONE' }));
    else res.end(JSON.stringify({ id: 7 }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(() => new Promise<void>((r) => server.close(() => r())));

function message(schemaId: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeInt32BE(schemaId, 1);
  b.writeUInt8(1, 5); // boolean true
  return b;
}

describe('schema registry basic auth', () => {
  it('registers and fetches with the right credentials, sent as basic auth', async () => {
    const codec = new AvroCodec({ url, username: 'key', password: 'secret' });
    seen.length = 0;
    await expect(codec.register('s-value', JSON.parse(SCHEMA) as Record<string, unknown>)).resolves.toMatchObject({ id: 7 });
    // The schema here is no change-event envelope: decoding fails after the fetch, not at it.
    const err = await codec.decode(message(7)).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(ConnectorError);
    const basic = `Basic ${Buffer.from('key:secret').toString('base64')}`;
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen.every((h) => h === basic)).toBe(true);
  });

  it('a wrong password is retriable when decoding and permanent when registering, naming kafka.schemaRegistry', async () => {
    const codec = new AvroCodec({ url, username: 'key', password: 'wrong' });
    const decoding = (await codec.decode(message(8)).catch((e: unknown) => e)) as ConnectorError;
    expect(decoding).toBeInstanceOf(ConnectorError);
    expect(decoding).toMatchObject({ code: 'SCHEMA_REGISTRY_AUTH', retriable: true });
    expect(decoding.message).toMatch(/HTTP 401: check kafka\.schemaRegistry\.username \(key\) and kafka\.schemaRegistry\.password/);
    const registering = (await codec
      .register('s-value', JSON.parse(SCHEMA) as Record<string, unknown>)
      .catch((e: unknown) => e)) as ConnectorError;
    expect(registering).toMatchObject({ code: 'SCHEMA_REGISTRY_AUTH', retriable: false });
    expect(registering.message).not.toContain('wrong');
  });

  it('without credentials, a 401 says the registry requires them', async () => {
    const err = (await new AvroCodec({ url }).decode(message(9)).catch((e: unknown) => e)) as ConnectorError;
    expect(err.message).toMatch(/requires authentication: set kafka\.schemaRegistry\.username and kafka\.schemaRegistry\.password/);
  });
});
