/** Image bytes to base64 with what every runtime has (Node >= 18, browsers, edge). */

import { GateError } from "./errors.js";
import type { ImageContent } from "./types.js";

interface Base64Bytes {
  toBase64(): string;
}

interface NodeBuffer {
  from(bytes: Uint8Array): { toString(encoding: "base64"): string };
}

const CHUNK = 0x8000;

export function bytesToBase64(bytes: Uint8Array): string {
  // Uint8Array.prototype.toBase64 (newer runtimes), else Node's Buffer, else btoa.
  const native = bytes as Uint8Array & Partial<Base64Bytes>;
  if (typeof native.toBase64 === "function") return native.toBase64();
  const buffer = (globalThis as { Buffer?: NodeBuffer }).Buffer;
  if (buffer !== undefined) return buffer.from(bytes).toString("base64");
  let binary = "";
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

/** `data` as base64: bytes and blobs are encoded, strings are taken as base64 already
 * (the sidecar refuses one that is not, naming `field`). */
export async function toBase64(data: ImageContent, field: string): Promise<string> {
  if (typeof data === "string") return data;
  if (data instanceof Uint8Array) return bytesToBase64(data);
  if (typeof Blob !== "undefined" && data instanceof Blob) {
    return bytesToBase64(new Uint8Array(await data.arrayBuffer()));
  }
  throw new GateError(`${field} must be a Uint8Array, a Blob or a base64 string`, {
    code: "invalid_request",
  });
}
