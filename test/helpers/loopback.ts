import type { Server as HttpServer, IncomingMessage } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

/** An HTTP(S) server of a test, listening on a loopback port the OS picked. */
export interface LoopbackServer {
  /** `http://127.0.0.1:<port>` (or https for a TLS server). */
  url: string;
  port: number;
  /** Closes the server and every open connection (keep-alive clients would hold it open). */
  close(): Promise<void>;
}

/** Starts `server` on 127.0.0.1 on a free port; close() drops its connections too. */
export async function listenLoopback(server: HttpServer | HttpsServer, scheme: 'http' | 'https' = 'http'): Promise<LoopbackServer> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A request's whole body. */
export async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
