/**
 * What the Node tests share: the running sidecar and the fixtures that
 * `tests/clients/test_typescript_client.py` made on it (real models, real photos), read
 * from `GATE_TS_*` variables, and small local HTTP servers for the failure tests.
 */

import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface Sidecar {
  readonly url: string;
  readonly checkKey: string;
  readonly adminKey: string;
  readonly appId: string;
  readonly protectedSubjectId: string;
  readonly grantId: string;
  readonly grantToken: string;
  readonly revokedGrantId: string;
  readonly revokedToken: string;
  readonly consentingSubjectId: string;
  /** Another photo of the protected (enrolled) person. */
  readonly protectedPhoto: Uint8Array<ArrayBuffer>;
  /** A photo without any face. */
  readonly faceFreePhoto: Uint8Array<ArrayBuffer>;
  /** A photo of a person nobody enrolled. */
  readonly strangerPhoto: Uint8Array<ArrayBuffer>;
}

const NAMES = {
  url: "GATE_TS_URL", checkKey: "GATE_TS_CHECK_KEY", adminKey: "GATE_TS_ADMIN_KEY",
  appId: "GATE_TS_APP_ID", protectedSubjectId: "GATE_TS_PROTECTED_SUBJECT_ID",
  grantId: "GATE_TS_GRANT_ID", grantToken: "GATE_TS_GRANT_TOKEN",
  revokedGrantId: "GATE_TS_REVOKED_GRANT_ID", revokedToken: "GATE_TS_REVOKED_TOKEN",
  consentingSubjectId: "GATE_TS_CONSENTING_SUBJECT_ID",
} as const;
const PHOTOS = {
  protectedPhoto: "GATE_TS_PROTECTED_PHOTO", faceFreePhoto: "GATE_TS_FACE_FREE_PHOTO",
  strangerPhoto: "GATE_TS_STRANGER_PHOTO",
} as const;

function readSidecar(): Sidecar | null {
  const values: Record<string, unknown> = {};
  for (const [field, name] of Object.entries(NAMES)) {
    const value = process.env[name];
    if (!value) return null;
    values[field] = value;
  }
  for (const [field, name] of Object.entries(PHOTOS)) {
    const path = process.env[name];
    if (!path) return null;
    values[field] = Uint8Array.from(readFileSync(path));
  }
  return values as unknown as Sidecar;
}

/** The sidecar, or `null` when these tests run without one. */
export const sidecar = readSidecar();

/** The `skip` option of tests that need the sidecar. */
export const needsSidecar = sidecar === null
  ? "no sidecar: run `pytest tests/clients/test_typescript_client.py` from the repository root"
  : false;

export function theSidecar(): Sidecar {
  if (sidecar === null) throw new Error("no sidecar");
  return sidecar;
}

export type Handler = (request: IncomingMessage, response: ServerResponse, body: Buffer) => void;

/** A local HTTP server on a free loopback port; `close()` it. */
export async function localServer(handler: Handler): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => handler(request, response, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A loopback URL where nothing listens. */
export async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}
