import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ConnectorError } from '../../../src/errors.ts';
import { AvroCodec } from '../../../src/events/avro-codec.ts';

/**
 * How the sink's decoder tells a schema id the registry does not know (permanent: the message is
 * dead-lettered) from a registry that cannot answer right now (retriable: the partition waits).
 * The registry here is a local HTTP server answering as Confluent's API documents.
 */
let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

async function registry(status: number, body: string): Promise<string> {
  server = createServer((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function message(schemaId: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeInt32BE(schemaId, 1);
  return b;
}

async function decodeError(url: string): Promise<ConnectorError> {
  const err = await new AvroCodec({ url }).decode(message(424242)).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ConnectorError);
  return err as ConnectorError;
}

describe('AvroCodec schema lookup', () => {
  it('an id the registry does not know (404, error_code 40403) is permanent: SCHEMA_NOT_FOUND', async () => {
    const err = await decodeError(await registry(404, JSON.stringify({ error_code: 40403, message: 'Schema 424242 not found' })));
    expect(err.code).toBe('SCHEMA_NOT_FOUND');
    expect(err.retriable).toBe(false);
    expect(err.message).toContain('424242');
  });

  it('a bare 404 (wrong path, a proxy) stays retriable', async () => {
    const err = await decodeError(await registry(404, '<html>not here</html>'));
    expect(err.code).toBe('SCHEMA_FETCH');
    expect(err.retriable).toBe(true);
  });

  it('a registry that fails (5xx) or cannot be reached stays retriable', async () => {
    const err = await decodeError(await registry(503, '{"error_code":50003}'));
    expect(err.retriable).toBe(true);
    const refused = await decodeError('http://127.0.0.1:1');
    expect(refused.code).toBe('SCHEMA_FETCH');
    expect(refused.retriable).toBe(true);
  });
});
